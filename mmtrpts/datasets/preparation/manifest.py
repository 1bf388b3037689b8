"""Checksum manifests that pin one copy of a benchmark's data.

A manifest is a json object::

    {"format": "mmtrpts-data-manifest", "format_version": 1,
     "benchmark": "vtab1k", "algorithm": "sha256", "num_files": 2,
     "files": {"cifar/test.txt": "<sha256 hex>", ...}}

``files`` maps the path of every split file and every listed image,
relative to the data root with ``/`` separators, to its sha256. The file
is written with sorted keys and a fixed layout, so the same tree always
gives the same bytes. The file list comes from a tree check
(:attr:`mmtrpts.datasets.preparation.Report.files`).
"""
import json
import os.path as osp
import re
from typing import Dict, List, Sequence

from tqdm import tqdm

from .report import Finding, sha256_file

__all__ = [
    'MANIFEST_FORMAT', 'MANIFEST_VERSION', 'ManifestError', 'build_manifest',
    'write_manifest', 'load_manifest', 'verify_manifest'
]

MANIFEST_FORMAT = 'mmtrpts-data-manifest'
MANIFEST_VERSION = 1
_SHA256 = re.compile(r'[0-9a-f]{64}')


class ManifestError(ValueError):
    """A malformed manifest file; the message names the file and key."""


def build_manifest(root: str,
                   benchmark: str,
                   files: Sequence[str],
                   progress: bool = False) -> dict:
    """Hash the given files of a data tree.

    Args:
        root (str): The data root.
        benchmark (str): ``'vtab1k'`` or ``'fgvc'``.
        files (Sequence[str]): Paths relative to ``root`` with ``/``
            separators, e.g. ``Report.files``.
        progress (bool): Show a tqdm bar. Defaults to False.

    Returns:
        dict: The manifest.

    Raises:
        FileNotFoundError: A file does not exist.
    """
    hashes = {
        rel: sha256_file(osp.join(root, rel))
        for rel in tqdm(
            sorted(set(files)),
            desc='sha256',
            unit='file',
            disable=not progress)
    }
    return dict(
        format=MANIFEST_FORMAT,
        format_version=MANIFEST_VERSION,
        benchmark=benchmark,
        algorithm='sha256',
        num_files=len(hashes),
        files=hashes)


def write_manifest(manifest: dict, path: str) -> None:
    """Write a manifest deterministically (sorted keys, one file a line).

    Args:
        manifest (dict): A manifest from :func:`build_manifest`.
        path (str): The output json file.
    """
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write('\n')


def load_manifest(path: str, benchmark: str) -> dict:
    """Read and validate a manifest.

    Args:
        path (str): The manifest json file.
        benchmark (str): The benchmark it must be for.

    Returns:
        dict: The manifest.

    Raises:
        FileNotFoundError: The file does not exist.
        ManifestError: Invalid json, a missing or wrong key, a bad hash or a
            ``num_files`` that disagrees with ``files``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'Manifest not found: {path}')
    with open(path, encoding='utf-8') as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as exc:
            raise ManifestError(f'{path}: invalid json ({exc})') from exc
    expected = dict(
        format=MANIFEST_FORMAT,
        format_version=MANIFEST_VERSION,
        benchmark=benchmark,
        algorithm='sha256')
    if not isinstance(manifest, dict):
        raise ManifestError(f'{path}: not a json object')
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise ManifestError(f'{path}: key {key!r} is '
                                f'{manifest.get(key)!r}; expected {value!r}')
    files = manifest.get('files')
    if not isinstance(files, dict):
        raise ManifestError(f"{path}: key 'files' is not an object "
                            '{"relative/path": "<sha256>"}')
    for rel, digest in files.items():
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ManifestError(f"{path}: key 'files', entry {rel!r}: "
                                f'{digest!r} is not a sha256 hex digest')
    if manifest.get('num_files') != len(files):
        raise ManifestError(
            f"{path}: key 'num_files' is {manifest.get('num_files')!r} but "
            f"'files' has {len(files)} entries")
    return manifest


def verify_manifest(root: str,
                    manifest: dict,
                    listed: Sequence[str],
                    manifest_path: str,
                    progress: bool = False) -> List[Finding]:
    """Compare a data tree with a manifest.

    Every manifest entry must exist under ``root`` with the same sha256,
    and every file the tree lists (``listed``, e.g. ``Report.files``)
    must be in the manifest.

    Args:
        root (str): The data root.
        manifest (dict): A manifest from :func:`load_manifest`.
        listed (Sequence[str]): Relative paths the tree lists now.
        manifest_path (str): The manifest file, named in the findings.
        progress (bool): Show a tqdm bar. Defaults to False.

    Returns:
        list[Finding]: An error per missing, changed or unpinned file, and
        one ``ok`` finding when all match.
    """
    pinned: Dict[str, str] = manifest['files']
    findings = []

    def error(rel: str, message: str, expected: str) -> None:
        findings.append(
            Finding('error', 'manifest', 'manifest', osp.join(root, rel), '',
                    message, expected))

    for rel in tqdm(
            sorted(pinned), desc='sha256', unit='file', disable=not progress):
        path = osp.join(root, rel)
        if not osp.isfile(path):
            error(rel, f'file listed in {manifest_path} not found',
                  f'a file with sha256 {pinned[rel]}')
            continue
        digest = sha256_file(path)
        if digest != pinned[rel]:
            error(rel, f'changed: sha256 {digest}',
                  f'sha256 {pinned[rel]} (from {manifest_path})')
    for rel in sorted(set(listed) - set(pinned)):
        error(rel, f'listed by the tree but not in {manifest_path}',
              'every split file and listed image pinned')
    if not findings:
        findings.append(
            Finding('ok', 'manifest', 'manifest', manifest_path, '',
                    f'all {len(pinned)} files match'))
    return findings
