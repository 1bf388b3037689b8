"""Validate an FGVC data tree (the VPT json layout, docs/benchmarks.md
§2) and report every problem found.

Expected sizes default to the table of :mod:`mmtrpts.datasets.fgvc_meta`;
pass ``dataset_table`` to check a tree of other sizes.
"""
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence

from ..annotation_io import JsonEntry, read_vpt_json
from ..fgvc_meta import FGVC_DATASETS, FGVCInfo, resolve_fgvc
from .report import (Collector, Report, check_count, image_pass, lookup,
                     parse_listing)

_FGVC_REQUIRED = ('train', 'val', 'test')
# FGVC split files in check order; trainval.json is optional.
_FGVC_FILES = _FGVC_REQUIRED + ('trainval', )


def check_fgvc(root: str,
               datasets: Optional[Sequence[str]] = None,
               folders: Optional[Mapping[str, str]] = None,
               image_subfolders: Optional[Mapping[str, str]] = None,
               check_images: bool = True,
               dataset_table: Optional[Mapping[str, FGVCInfo]] = None,
               progress: bool = False) -> Report:
    """Check an FGVC tree of VPT json splits.

    Per data set: its folder and image folder exist; ``train.json``,
    ``val.json`` and ``test.json`` exist and parse, and ``trainval.json``
    if present; the counts match the table (trainval: train + val); the
    distinct class ids over all files number ``num_classes``; train, val
    and test share no image; trainval equals train plus val; every listed
    image exists and, with ``check_images``, decodes with PIL.

    Args:
        root (str): Folder holding the data-set folders.
        datasets (Sequence[str], optional): Data-set names or aliases.
            Defaults to all data sets of the table.
        folders (Mapping[str, str], optional): Data-set name -> folder
            under ``root``. Defaults to the GPS folder names.
        image_subfolders (Mapping[str, str], optional): Data-set name ->
            folder (inside the data-set folder) the json keys are relative
            to; ``''`` is the data-set folder. Defaults to the GPS layout.
        check_images (bool): Decode every listed image; if False only
            check that they exist. Defaults to True.
        dataset_table (Mapping[str, FGVCInfo], optional): Expected classes
            and split sizes per canonical name. Defaults to
            ``FGVC_DATASETS``.
        progress (bool): Show a tqdm bar per data set. Defaults to False.

    Returns:
        Report: The findings.
    """
    table = FGVC_DATASETS if dataset_table is None else dataset_table

    def info_of(name: str) -> FGVCInfo:
        return lookup(name, table, lambda n: resolve_fgvc(n).name, 'data set')

    infos = list(dict.fromkeys(info_of(n) for n in (datasets or list(table))))
    folder_of = {info_of(k).name: v for k, v in (folders or {}).items()}
    sub_of = {info_of(k).name: v for k, v in (image_subfolders or {}).items()}
    report = Report('fgvc', root, [info.name for info in infos], check_images)
    for info in infos:
        col = Collector(info.name)
        _check_fgvc_dataset(col, root, info,
                            folder_of.get(info.name, info.gps_folder),
                            sub_of.get(info.name, info.image_subfolder),
                            check_images, progress, report.files)
        report.findings.extend(col.close())
    report.files = sorted(set(report.files))
    return report


def _check_fgvc_dataset(col: Collector, root: str, info: FGVCInfo, folder: str,
                        subfolder: str, decode: bool, progress: bool,
                        files: List[str]) -> None:
    ds_dir = osp.join(root, folder)
    if not osp.isdir(ds_dir):
        col.add('error', 'folder', ds_dir, '',
                'data-set folder not found; nothing else checked',
                'a folder with train.json, val.json and test.json')
        return
    img_dir = osp.normpath(osp.join(ds_dir, subfolder))
    parsed: Dict[str, Dict[str, int]] = {}
    paths = {s: osp.join(ds_dir, f'{s}.json') for s in _FGVC_FILES}
    for split, path in paths.items():
        if split == 'trainval' and not osp.isfile(path):
            col.add('ok', 'file', path, '',
                    'absent (optional: train.json + val.json are used)')
            continue
        entries: Optional[List[JsonEntry]] = parse_listing(
            col, path, read_vpt_json, files, root)
        if entries is not None:
            parsed[split] = {e.rel_path: e.class_id for e in entries}
            check_count(col, path, len(entries), _fgvc_size(info, split),
                        'images')
    _check_class_ids(col, ds_dir, info, parsed, paths)
    _check_disjoint(col, parsed, paths)
    _check_trainval(col, parsed, paths)
    if not osp.isdir(img_dir):
        col.add(
            'error', 'folder', img_dir, '',
            f'image folder not found (image_subfolder={subfolder!r}); '
            'images not checked', 'the folder the json keys are '
            'relative to')
        return
    listed = [(osp.normpath(osp.join(img_dir, key)), paths[split],
               f'key {key!r}', False) for split, mapping in parsed.items()
              for key in mapping]
    image_pass(col, root, listed, decode, progress, info.name, files)


def _fgvc_size(info: FGVCInfo, split: str) -> int:
    return dict(
        train=info.num_train,
        val=info.num_val,
        test=info.num_test,
        trainval=info.num_train + info.num_val)[split]


def _check_class_ids(col: Collector, ds_dir: str, info: FGVCInfo,
                     parsed: Dict[str, Dict[str, int]],
                     paths: Dict[str, str]) -> None:
    if not parsed:
        return
    ids = {c for mapping in parsed.values() for c in mapping.values()}
    for split, mapping in parsed.items():
        col.add('ok', 'classes', paths[split], '',
                f'{len(set(mapping.values()))} distinct class ids')
    files = ', '.join(f'{s}.json' for s in parsed)
    if len(ids) == info.num_classes:
        col.add('ok', 'classes', ds_dir, '',
                f'{len(ids)} distinct class ids over {files}')
    else:
        col.add('error', 'classes', ds_dir, '',
                f'{len(ids)} distinct class ids over {files}',
                f'num_classes={info.num_classes}')


def _check_disjoint(col: Collector, parsed: Dict[str, Dict[str, int]],
                    paths: Dict[str, str]) -> None:
    present = [s for s in _FGVC_REQUIRED if s in parsed]
    for i, first in enumerate(present):
        for second in present[i + 1:]:
            common = sorted(set(parsed[first]) & set(parsed[second]))
            for key in common:
                col.add('error', 'overlap', paths[second], f'key {key!r}',
                        f'{key} is also in {paths[first]}',
                        'train, val and test share no image')
            if not common:
                col.add('ok', 'overlap', paths[second], '',
                        f'no image shared with {first}.json')


def _check_trainval(col: Collector, parsed: Dict[str, Dict[str, int]],
                    paths: Dict[str, str]) -> None:
    if 'trainval' not in parsed:
        return
    if 'train' not in parsed or 'val' not in parsed:
        col.add(
            'warning', 'trainval', paths['trainval'], '',
            'not compared with train.json + val.json: one of them '
            'could not be read')
        return
    union = dict(parsed['val'], **parsed['train'])
    trainval = parsed['trainval']
    problems = 0
    for key in sorted(set(union) | set(trainval)):
        found, wanted = trainval.get(key), union.get(key)
        if found == wanted:
            continue
        problems += 1
        if wanted is None:
            message = f'{key} is in neither train.json nor val.json'
        elif found is None:
            message = f'{key} (class {wanted}) is missing'
        else:
            message = f'{key} has class {found}, train/val say {wanted}'
        col.add('error', 'trainval', paths['trainval'], f'key {key!r}',
                message, 'trainval.json == train.json + val.json')
    if not problems:
        col.add('ok', 'trainval', paths['trainval'], '',
                'equals train.json + val.json')
