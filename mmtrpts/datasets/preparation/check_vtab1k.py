"""Validate a VTAB-1k data tree (the NOAH/SSF layout,
docs/benchmarks.md §1) and report every problem found.

Expected sizes default to the tables of :mod:`mmtrpts.datasets.vtab_tasks`;
pass ``split_sizes`` to check a tree of other sizes.
"""
import os.path as osp
from collections import Counter, defaultdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..annotation_io import LabelLine, read_label_lines
from ..vtab_tasks import (VTAB_SPLIT_SIZES, VTAB_SPLITS, VTAB_TASKS, TaskInfo,
                          resolve_task)
from .report import (MAX_LISTED, Collector, Report, check_count, image_pass,
                     lookup, parse_listing)

# Splits whose images train800val200 must equal, as a multiset.
_VTAB_UNION = ('train800', 'val200')


def check_vtab1k(root: str,
                 tasks: Optional[Sequence[str]] = None,
                 check_images: bool = True,
                 split_sizes: Optional[Mapping[str, int]] = None,
                 progress: bool = False) -> Report:
    """Check a VTAB-1k tree in the NOAH/SSF layout.

    Per task: the task folder and the four split files exist and parse;
    the sample counts are 800/200/1000 and the task's test size; labels
    lie in ``[0, num_classes)`` and the number of distinct labels is
    reported (fewer than ``num_classes`` over all splits is a warning);
    no split lists an image twice; train800 plus val200 equals
    train800val200 as a multiset of (image content, label), since the
    release stores each split's images in its own folder; every listed
    image exists and, with ``check_images``, decodes with PIL.

    Args:
        root (str): Folder holding the task folders.
        tasks (Sequence[str], optional): Task folder names or aliases.
            Defaults to all 19 tasks.
        check_images (bool): Decode every listed image. If False, only
            their existence is checked (and the images of train800, val200
            and train800val200 are still read to compare them). Defaults
            to True.
        split_sizes (Mapping[str, int], optional): Expected sample counts
            per split (keys from ``VTAB_SPLITS``); overrides the defaults
            800/200/1000 and, for ``'test'``, every task's test size.
        progress (bool): Show a tqdm bar per task. Defaults to False.

    Returns:
        Report: The findings.
    """
    chosen: Dict[str, Tuple[TaskInfo, str]] = {}
    for name in (list(VTAB_TASKS) if tasks is None else tasks):
        info = lookup(name, VTAB_TASKS, lambda n: resolve_task(n).folder,
                      'task')
        chosen.setdefault(info.folder, (info, name))
    report = Report('vtab1k', root, list(chosen), check_images)
    sizes = dict(VTAB_SPLIT_SIZES, **(split_sizes or {}))
    for info, name in chosen.values():
        col = Collector(info.folder)
        _check_vtab_task(col, root, info, name, sizes, check_images, progress,
                         report.files)
        report.findings.extend(col.close())
    report.files = sorted(set(report.files))
    return report


def _check_vtab_task(col: Collector, root: str, info: TaskInfo, name: str,
                     sizes: Dict[str, int], decode: bool, progress: bool,
                     files: List[str]) -> None:
    candidates = list(dict.fromkeys((info.folder, name)))
    task_dir = next((osp.join(root, c)
                     for c in candidates if osp.isdir(osp.join(root, c))),
                    None)
    if task_dir is None:
        col.add(
            'error', 'folder', osp.join(root, info.folder), '',
            'task folder not found (tried '
            f'{", ".join(candidates)}); nothing else checked',
            'a folder with ' + ', '.join(f'{s}.txt' for s in VTAB_SPLITS))
        return
    entries: Dict[str, List[LabelLine]] = {}
    for split in VTAB_SPLITS:
        path = osp.join(task_dir, f'{split}.txt')
        parsed = parse_listing(col, path, read_label_lines, files, root)
        if parsed is None:
            continue
        entries[split] = parsed
        check_count(col, path, len(parsed), sizes.get(split, info.test_size),
                    'samples')
        _check_vtab_labels(col, path, parsed, info.num_classes)
        _check_repeated_paths(col, path, parsed)
    _check_distinct_labels(col, task_dir, entries, info.num_classes)
    listed = []
    for split, split_entries in entries.items():
        path = osp.join(task_dir, f'{split}.txt')
        listed.extend((osp.join(task_dir, e.rel_path), path,
                       f'line {e.line_no}', split != 'test')
                      for e in split_entries)
    digests = image_pass(col, root, listed, decode, progress, info.folder,
                         files)
    _check_vtab_union(col, task_dir, entries, digests)


def _check_vtab_labels(col: Collector, path: str, entries: List[LabelLine],
                       num_classes: int) -> None:
    bad = [e for e in entries if e.label >= num_classes]
    for e in bad:
        col.add('error', 'labels', path, f'line {e.line_no}',
                f'label {e.label} ({e.rel_path})',
                f'0 <= label < num_classes={num_classes}')
    if not bad:
        distinct = len({e.label for e in entries})
        col.add(
            'ok', 'labels', path, '',
            f'labels in [0, {num_classes}); {distinct} distinct '
            f'labels of {num_classes} classes')


def _check_repeated_paths(col: Collector, path: str,
                          entries: List[LabelLine]) -> None:
    first: Dict[str, int] = {}
    for e in entries:
        if e.rel_path in first:
            col.add(
                'error', 'file', path, f'line {e.line_no}',
                f'image {e.rel_path} is listed again (first on line '
                f'{first[e.rel_path]})', 'every image listed once')
        first.setdefault(e.rel_path, e.line_no)


def _check_distinct_labels(col: Collector, task_dir: str,
                           entries: Dict[str, List[LabelLine]],
                           num_classes: int) -> None:
    used = {e.label for ents in entries.values() for e in ents}
    unused = [c for c in range(num_classes) if c not in used]
    if not unused:
        col.add('ok', 'classes', task_dir, '',
                f'all {num_classes} classes occur in the split files')
    elif entries:
        shown = ', '.join(map(str, unused[:MAX_LISTED]))
        more = ', ...' if len(unused) > MAX_LISTED else ''
        col.add(
            'warning', 'classes', task_dir, '',
            f'{num_classes - len(unused)} distinct labels over the '
            f'split files read; never used: {shown}{more}',
            f'all {num_classes} classes')


def _check_vtab_union(col: Collector, task_dir: str,
                      entries: Dict[str, List[LabelLine]],
                      digests: Dict[str, Optional[str]]) -> None:
    """train800 + val200 == train800val200 by (image content, label)."""
    whole = 'train800val200'
    splits = _VTAB_UNION + (whole, )
    absent = [s for s in splits if s not in entries]
    no_image = sum(
        digests.get(osp.join(task_dir, e.rel_path)) is None for s in splits
        if s in entries for e in entries[s])
    if absent or no_image:
        reason = (f'{", ".join(absent)} could not be read' if absent else
                  f'{no_image} of their samples have no image file')
        col.add('warning', 'union', task_dir, '',
                f'train800 + val200 == train800val200 not checked: {reason}')
        return
    keyed: Dict[str, Dict[Tuple[str, int], List[LabelLine]]] = {}
    sizes: Dict[str, Counter] = {}
    for split in splits:
        keyed[split], sizes[split] = defaultdict(list), Counter()
        for e in entries[split]:
            key = (digests[osp.join(task_dir, e.rel_path)], e.label)
            keyed[split][key].append(e)
            sizes[split][key] += 1
    parts = sizes['train800'] + sizes['val200']
    problems = 0
    for key, count in (sizes[whole] - parts).items():
        for e in keyed[whole][key][:count]:
            problems += 1
            col.add(
                'error', 'union', osp.join(task_dir, f'{whole}.txt'),
                f'line {e.line_no}', f'{e.rel_path} (label {e.label}) is in '
                'neither train800.txt nor val200.txt (compared by image '
                'content and label)', 'train800val200 == train800 + val200')
    for split in _VTAB_UNION:
        for key, count in (sizes[split] - sizes[whole]).items():
            for e in keyed[split][key][:count]:
                problems += 1
                col.add(
                    'error', 'union', osp.join(task_dir, f'{split}.txt'),
                    f'line {e.line_no}', f'{e.rel_path} (label {e.label}) '
                    f'is not in {whole}.txt (compared by image content and '
                    'label)', 'train800val200 == train800 + val200')
    if not problems:
        col.add(
            'ok', 'union', task_dir, '', 'train800 + val200 == '
            f'train800val200 ({sum(sizes[whole].values())} samples, '
            'compared by image content and label)')
