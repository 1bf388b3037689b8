"""Model-zoo files: names with a content hash, a local zoo folder (pure).

A zoo checkpoint is named the way MMPretrain names its published weights,
``<model name>_<YYYYMMDD>-<first 8 hex digits of the file's sha256>.pth``
(e.g. ``trpts_vit-b_cub_20261205-1a2b3c4d.pth``), so the name itself says
which bytes it must hold.  Metafiles refer to zoo files as
``mmtrpts-zoo://<file name>``: no URL, nothing is downloaded.  The file is
looked up in the zoo folders, in this order:

1. the folders added with :func:`add_zoo_dir` (``register_model_zoo`` adds
   the folder of a zoo's own ``model-index.yml``), newest first;
2. ``$MMTRPTS_ZOO`` (:data:`ZOO_ENV`), a list separated by ``os.pathsep``;
3. ``zoo/`` in the current directory.

:func:`resolve_zoo_file` finds the file and checks its hash before anything
reads it as a checkpoint.
"""
import os
import os.path as osp
import re
from typing import List, Optional

from ..utils.hashing import sha256_file

#: The scheme of zoo references in a metafile's ``Weights``.
ZOO_SCHEME = 'mmtrpts-zoo://'
#: Environment variable naming the local zoo folder(s).
ZOO_ENV = 'MMTRPTS_ZOO'
#: The folder searched last, relative to the current directory.
DEFAULT_ZOO_DIR = 'zoo'
_HASH_LENGTH = 8
_ZOO_NAME = re.compile(r'^(?P<name>.+)_(?P<date>\d{8})-(?P<sha>[0-9a-f]{8})'
                       r'\.pth$')
_added_dirs: List[str] = []


class ZooFileError(RuntimeError):
    """A zoo file is missing, misnamed or does not match its hash."""


def zoo_file_name(model_name: str, sha256: str, date: str) -> str:
    """The zoo file name of a checkpoint.

    Args:
        model_name (str): The metafile ``Name`` (``get_model`` name).
        sha256 (str): The hex sha256 of the file's bytes.
        date (str): ``YYYYMMDD``.

    Returns:
        str: ``<model_name>_<date>-<sha256[:8]>.pth``.

    Raises:
        ValueError: a malformed date or digest.
    """
    if not re.fullmatch(r'\d{8}', date):
        raise ValueError(f'date {date!r}: expected YYYYMMDD')
    if not re.fullmatch(r'[0-9a-f]{64}', sha256):
        raise ValueError(f'sha256 {sha256!r}: expected 64 lower-case hex '
                         'digits')
    return f'{model_name}_{date}-{sha256[:_HASH_LENGTH]}.pth'


def parse_zoo_file_name(file_name: str) -> dict:
    """Split a zoo file name into ``name``, ``date`` and ``sha`` (8 hex).

    Raises:
        ZooFileError: the name does not follow :func:`zoo_file_name`.
    """
    match = _ZOO_NAME.match(osp.basename(file_name))
    if match is None:
        raise ZooFileError(
            f'{file_name!r} is not a zoo file name: expected '
            '<model name>_<YYYYMMDD>-<8 hex digits of its sha256>.pth')
    return match.groupdict()


def add_zoo_dir(path: str) -> None:
    """Search ``path`` first for zoo files (see the module docstring)."""
    path = osp.abspath(osp.expanduser(path))
    if path in _added_dirs:
        _added_dirs.remove(path)
    _added_dirs.insert(0, path)


def env_zoo_dirs() -> List[str]:
    """The folders named by ``$MMTRPTS_ZOO`` (absolute paths)."""
    return [
        osp.abspath(osp.expanduser(p))
        for p in os.environ.get(ZOO_ENV, '').split(os.pathsep) if p
    ]


def zoo_dirs() -> List[str]:
    """The zoo folders, in search order."""
    ordered = []
    for path in _added_dirs + env_zoo_dirs() + [osp.abspath(DEFAULT_ZOO_DIR)]:
        if path not in ordered:
            ordered.append(path)
    return ordered


def verify_zoo_file(path: str) -> str:
    """Check that a zoo file's sha256 starts with the digits in its name.

    Returns:
        str: The file's full sha256.

    Raises:
        ZooFileError: the name is malformed or the content differs.
    """
    expected = parse_zoo_file_name(path)['sha']
    found = sha256_file(path)
    if not found.startswith(expected):
        raise ZooFileError(
            f'{path}: sha256 {found[:_HASH_LENGTH]}... does not match the '
            f'{expected} in its name: the file is corrupt, truncated or '
            'not the published one; download it again')
    return found


def resolve_zoo_file(reference: str,
                     search: Optional[List[str]] = None) -> str:
    """The verified local path of a zoo reference.

    Args:
        reference (str): ``mmtrpts-zoo://<file name>`` or a bare file name.
        search (list[str], optional): Folders to search instead of
            :func:`zoo_dirs`.

    Returns:
        str: The path of the file, after :func:`verify_zoo_file`.

    Raises:
        ZooFileError: the file is in none of the folders (they are listed,
            with how to add one), or its hash does not match.
    """
    name = reference[len(ZOO_SCHEME):] if reference.startswith(
        ZOO_SCHEME) else reference
    if osp.basename(name) != name or not name:
        raise ZooFileError(f'zoo reference {reference!r}: expected '
                           f'{ZOO_SCHEME}<file name> without folders')
    parse_zoo_file_name(name)
    folders = zoo_dirs() if search is None else search
    for folder in folders:
        path = osp.join(folder, name)
        if osp.isfile(path):
            verify_zoo_file(path)
            return path
    raise ZooFileError(
        f'zoo file {name} not found in {", ".join(folders) or "no folder"}; '
        f'put it in one of them, set {ZOO_ENV}=FOLDER, or register the '
        "zoo's model-index.yml with mmtrpts.apis.register_model_zoo")
