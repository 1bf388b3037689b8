"""Validate a VTAB-1k or FGVC data tree and report every problem found.

:func:`check_vtab1k` checks the NOAH/SSF layout (BENCHMARKS.md §1) and
:func:`check_fgvc` the VPT json layout (BENCHMARKS.md §2). Both return a
:class:`Report`: a list of :class:`Finding` (level ``ok``, ``warning`` or
``error``) that names the file, the line or key, the value found and what
was expected. Missing files, wrong counts, bad labels and unreadable images
are errors; a check that cannot run says so in a finding, nothing is
skipped silently. :func:`format_report` renders a report as text.

Expected sizes default to the tables in :mod:`.vtab_tasks` and
:mod:`.fgvc_meta`; pass ``split_sizes`` (VTAB-1k) or ``dataset_table``
(FGVC) to check a tree of other sizes.
"""
import hashlib
import os
import os.path as osp
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import (Callable, Dict, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple)

from PIL import Image
from tqdm import tqdm

from .annotation_io import (AnnotationError, JsonEntry, LabelLine,
                            read_label_lines, read_vpt_json)
from .fgvc_meta import FGVC_DATASETS, FGVCInfo, resolve_fgvc
from .vtab_tasks import (VTAB_SPLIT_SIZES, VTAB_SPLITS, VTAB_TASKS, TaskInfo,
                         resolve_task)

__all__ = [
    'Finding', 'Report', 'check_vtab1k', 'check_fgvc', 'format_report',
    'sha256_file'
]

LEVELS = ('ok', 'warning', 'error')
#: Findings of one level and kind per file listed before the rest are
#: summarised in one finding with their number.
MAX_LISTED = 20
_TITLES = {'vtab1k': 'VTAB-1k', 'fgvc': 'FGVC'}
# Splits whose images train800val200 must equal, as a multiset.
_VTAB_UNION = ('train800', 'val200')
_FGVC_REQUIRED = ('train', 'val', 'test')
# FGVC split files in check order; trainval.json is optional.
_FGVC_FILES = _FGVC_REQUIRED + ('trainval', )
_NOT_FOUND = 'image file not found'


class Finding(NamedTuple):
    """One result of a check.

    Attributes:
        level (str): ``'ok'``, ``'warning'`` or ``'error'``.
        subject (str): The task or data set (``'manifest'`` for manifest
            checks).
        check (str): What was checked: ``'folder'``, ``'file'``,
            ``'count'``, ``'labels'``, ``'classes'``, ``'image'``,
            ``'union'``, ``'overlap'``, ``'trainval'`` or ``'manifest'``.
        file (str): The file or folder concerned (joined to the root as
            given).
        where (str): ``'line <n>'``, ``"key '<path>'"`` or ``''``.
        message (str): What was found, with the value.
        expected (str): What was expected; ``''`` when it says it all.
    """

    level: str
    subject: str
    check: str
    file: str
    where: str
    message: str
    expected: str = ''


@dataclass
class Report:
    """The findings of one tree check.

    Attributes:
        benchmark (str): ``'vtab1k'`` or ``'fgvc'``.
        root (str): The root folder checked.
        subjects (list[str]): The tasks or data sets checked.
        images_decoded (bool): Whether every listed image was decoded
            (False: only their existence was checked).
        findings (list[Finding]): All findings, per subject.
        files (list[str]): Sorted paths, relative to ``root`` with ``/``
            separators, of every split file and listed image that exists:
            what a checksum manifest pins.
    """

    benchmark: str
    root: str
    subjects: List[str]
    images_decoded: bool
    findings: List[Finding] = field(default_factory=list)
    files: List[str] = field(default_factory=list)

    def by_level(self, level: str) -> List[Finding]:
        """The findings of one level."""
        return [f for f in self.findings if f.level == level]

    @property
    def errors(self) -> List[Finding]:
        """The error findings."""
        return self.by_level('error')

    def to_dict(self) -> dict:
        """A json-serialisable summary (without the file list)."""
        return dict(
            benchmark=self.benchmark,
            root=self.root,
            subjects=list(self.subjects),
            images_decoded=self.images_decoded,
            counts={level: len(self.by_level(level))
                    for level in LEVELS},
            findings=[f._asdict() for f in self.findings])


class _Collector:
    """Collects the findings of one subject, summarising long runs."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.findings: List[Finding] = []
        self._counts: Counter = Counter()

    def add(self,
            level: str,
            check: str,
            file: str,
            where: str,
            message: str,
            expected: str = '') -> None:
        key = (level, check, file)
        self._counts[key] += 1
        if self._counts[key] <= MAX_LISTED:
            self.findings.append(
                Finding(level, self.subject, check, file, where, message,
                        expected))

    def close(self) -> List[Finding]:
        """All findings, plus one per run that was cut at MAX_LISTED."""
        for (level, check, file), count in self._counts.items():
            if count > MAX_LISTED:
                self.findings.append(
                    Finding(
                        level, self.subject, check, file, '',
                        f'{count - MAX_LISTED} more {level} findings of '
                        f'check {check!r} in this file (not listed)'))
        return self.findings


def sha256_file(path: str) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _inspect_image(path: str, decode: bool,
                   want_digest: bool) -> Tuple[Optional[str], Optional[str]]:
    """``(problem or None, sha256 or None)`` of one image file."""
    if not osp.isfile(path):
        return _NOT_FOUND, None
    digest = sha256_file(path) if want_digest else None
    if decode:
        try:
            with Image.open(path) as img:
                img.load()
        # PIL raises OSError, SyntaxError, ValueError, DecompressionBomb...
        except Exception as exc:
            return (f'cannot be decoded ({type(exc).__name__}: {exc})', digest)
    return None, digest


def _rel(root: str, path: str) -> str:
    return osp.relpath(path, root).replace(os.sep, '/')


def _lookup(name: str, table: Mapping, resolve: Callable[[str], str],
            kind: str):
    """The table entry of ``name`` (a key or an alias of one)."""
    if name in table:
        return table[name]
    key = resolve(name)
    if key not in table:
        raise ValueError(f'{kind} {name!r} ({key}) is not in the table of '
                         f'expected sizes: {", ".join(table)}')
    return table[key]


def _check_count(col: _Collector, path: str, found: int, expected: int,
                 unit: str) -> None:
    if found == expected:
        col.add('ok', 'count', path, '', f'{found} {unit}')
    else:
        col.add('error', 'count', path, '', f'{found} {unit}',
                f'{expected} {unit}')


def _image_pass(col: _Collector, root: str, listed: Sequence[Tuple],
                decode: bool, progress: bool, desc: str,
                files: List[str]) -> Dict[str, Optional[str]]:
    """Check every listed image once; return sha256 per wanted path.

    ``listed`` holds ``(image path, source file, where, want_digest)``;
    a problem is reported at the first source that lists the image.
    """
    digests: Dict[str, Optional[str]] = {}
    problems: Dict[str, Optional[str]] = {}
    per_source: Counter = Counter()
    bad_sources: Counter = Counter()
    for img_path, source, where, want_digest in tqdm(
            listed, desc=desc, unit='img', disable=not progress):
        per_source[source] += 1
        if img_path not in problems:
            problem, digest = _inspect_image(img_path, decode, want_digest)
            problems[img_path] = problem
            if want_digest:
                digests[img_path] = digest
            if problem != _NOT_FOUND:
                files.append(_rel(root, img_path))
            if problem is not None:
                col.add(
                    'error', 'image', source, where,
                    f'{_rel(osp.dirname(source), img_path)}: {problem}',
                    'a decodable image file'
                    if decode else 'an existing image file')
        if problems[img_path] is not None:
            bad_sources[source] += 1
    how = ('exist and decode' if decode else
           'exist (not decoded: image decoding was switched off)')
    for source, count in per_source.items():
        if not bad_sources[source]:
            col.add('ok', 'image', source, '', f'all {count} images {how}')
    return digests


def _parse(col: _Collector, path: str, reader: Callable, files: List[str],
           root: str):
    """Parse one split file; a missing or malformed file is an error."""
    if not osp.isfile(path):
        col.add('error', 'file', path, '', 'split file not found',
                'an existing split file')
        return None
    files.append(_rel(root, path))
    try:
        return reader(path)
    except (AnnotationError, OSError) as exc:
        line = getattr(exc, 'line', None)
        col.add('error', 'file', path, f'line {line}' if line else '',
                f'cannot be parsed, so not checked further: {exc}')
    return None


# ------------------------------------------------------------------ VTAB-1k
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
        info = _lookup(name, VTAB_TASKS, lambda n: resolve_task(n).folder,
                       'task')
        chosen.setdefault(info.folder, (info, name))
    report = Report('vtab1k', root, list(chosen), check_images)
    sizes = dict(VTAB_SPLIT_SIZES, **(split_sizes or {}))
    for info, name in chosen.values():
        col = _Collector(info.folder)
        _check_vtab_task(col, root, info, name, sizes, check_images, progress,
                         report.files)
        report.findings.extend(col.close())
    report.files = sorted(set(report.files))
    return report


def _check_vtab_task(col: _Collector, root: str, info: TaskInfo, name: str,
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
        parsed = _parse(col, path, read_label_lines, files, root)
        if parsed is None:
            continue
        entries[split] = parsed
        _check_count(col, path, len(parsed), sizes.get(split, info.test_size),
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
    digests = _image_pass(col, root, listed, decode, progress, info.folder,
                          files)
    _check_vtab_union(col, task_dir, entries, digests)


def _check_vtab_labels(col: _Collector, path: str, entries: List[LabelLine],
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


def _check_repeated_paths(col: _Collector, path: str,
                          entries: List[LabelLine]) -> None:
    first: Dict[str, int] = {}
    for e in entries:
        if e.rel_path in first:
            col.add(
                'error', 'file', path, f'line {e.line_no}',
                f'image {e.rel_path} is listed again (first on line '
                f'{first[e.rel_path]})', 'every image listed once')
        first.setdefault(e.rel_path, e.line_no)


def _check_distinct_labels(col: _Collector, task_dir: str,
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


def _check_vtab_union(col: _Collector, task_dir: str,
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


# --------------------------------------------------------------------- FGVC
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

    def lookup(name: str) -> FGVCInfo:
        return _lookup(name, table, lambda n: resolve_fgvc(n).name, 'data set')

    infos = list(dict.fromkeys(lookup(n) for n in (datasets or list(table))))
    folder_of = {lookup(k).name: v for k, v in (folders or {}).items()}
    sub_of = {lookup(k).name: v for k, v in (image_subfolders or {}).items()}
    report = Report('fgvc', root, [info.name for info in infos], check_images)
    for info in infos:
        col = _Collector(info.name)
        _check_fgvc_dataset(col, root, info,
                            folder_of.get(info.name, info.gps_folder),
                            sub_of.get(info.name, info.image_subfolder),
                            check_images, progress, report.files)
        report.findings.extend(col.close())
    report.files = sorted(set(report.files))
    return report


def _check_fgvc_dataset(col: _Collector, root: str, info: FGVCInfo,
                        folder: str, subfolder: str, decode: bool,
                        progress: bool, files: List[str]) -> None:
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
        entries: Optional[List[JsonEntry]] = _parse(col, path, read_vpt_json,
                                                    files, root)
        if entries is not None:
            parsed[split] = {e.rel_path: e.class_id for e in entries}
            _check_count(col, path, len(entries), _fgvc_size(info, split),
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
    _image_pass(col, root, listed, decode, progress, info.name, files)


def _fgvc_size(info: FGVCInfo, split: str) -> int:
    return dict(
        train=info.num_train,
        val=info.num_val,
        test=info.num_test,
        trainval=info.num_train + info.num_val)[split]


def _check_class_ids(col: _Collector, ds_dir: str, info: FGVCInfo,
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


def _check_disjoint(col: _Collector, parsed: Dict[str, Dict[str, int]],
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


def _check_trainval(col: _Collector, parsed: Dict[str, Dict[str, int]],
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


# ------------------------------------------------------------------- format
def format_report(report: Report) -> str:
    """Render a report as text: findings per subject, then a summary.

    Args:
        report (Report): The report.

    Returns:
        str: The text, ending with a ``PASSED``/``FAILED`` line.
    """
    title = _TITLES.get(report.benchmark, report.benchmark)
    images = ('every listed image decoded with PIL'
              if report.images_decoded else
              'NOT decoded (--no-images): only their existence was checked')
    lines = [
        f'{title} tree check of {report.root}',
        f'Checked: {", ".join(report.subjects)}', f'Images: {images}'
    ]
    by_subject: Dict[str, List[Finding]] = defaultdict(list)
    for finding in report.findings:
        by_subject[finding.subject].append(finding)
    for subject, findings in by_subject.items():
        lines.append(f'== {subject} ==')
        lines.extend(f'  {_format_finding(f)}' for f in findings)
    counts = {level: len(report.by_level(level)) for level in LEVELS}
    verdict = 'FAILED' if counts['error'] else 'PASSED'
    lines.append(f'{verdict}: {counts["error"]} errors, '
                 f'{counts["warning"]} warnings, {counts["ok"]} ok')
    return '\n'.join(lines)


def _format_finding(finding: Finding) -> str:
    level = finding.level if finding.level == 'ok' else finding.level.upper()
    where = f', {finding.where}' if finding.where else ''
    expected = f' [expected {finding.expected}]' if finding.expected else ''
    return (f'{level:<7} {finding.check:<8} {finding.file}{where}: '
            f'{finding.message}{expected}')
