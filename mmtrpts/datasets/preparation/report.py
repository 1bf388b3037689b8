"""Validation reports of a data tree: findings, collectors, image checks.

The shared machinery of :mod:`.check_vtab1k` and :mod:`.check_fgvc`: a
:class:`Report` is a list of :class:`Finding` (level ``ok``, ``warning`` or
``error``) that names the file, the line or key, the value found and what
was expected; a check that cannot run says so in a finding, nothing is
skipped silently.  :func:`format_report` renders a report as text.
"""
import os
import os.path as osp
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import (Callable, Dict, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple)

from PIL import Image
from tqdm import tqdm

from ...utils import sha256_file
from ..annotation_io import AnnotationError

LEVELS = ('ok', 'warning', 'error')
#: Findings of one level and kind per file listed before the rest are
#: summarised in one finding with their number.
MAX_LISTED = 20
TITLES = {'vtab1k': 'VTAB-1k', 'fgvc': 'FGVC'}
NOT_FOUND = 'image file not found'


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


class Collector:
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


def inspect_image(path: str, decode: bool,
                  want_digest: bool) -> Tuple[Optional[str], Optional[str]]:
    """``(problem or None, sha256 or None)`` of one image file."""
    if not osp.isfile(path):
        return NOT_FOUND, None
    digest = sha256_file(path) if want_digest else None
    if decode:
        try:
            with Image.open(path) as img:
                img.load()
        # PIL raises OSError, SyntaxError, ValueError, DecompressionBomb...
        except Exception as exc:
            return (f'cannot be decoded ({type(exc).__name__}: {exc})', digest)
    return None, digest


def relpath(root: str, path: str) -> str:
    return osp.relpath(path, root).replace(os.sep, '/')


def lookup(name: str, table: Mapping, resolve: Callable[[str], str],
           kind: str):
    """The table entry of ``name`` (a key or an alias of one)."""
    if name in table:
        return table[name]
    key = resolve(name)
    if key not in table:
        raise ValueError(f'{kind} {name!r} ({key}) is not in the table of '
                         f'expected sizes: {", ".join(table)}')
    return table[key]


def check_count(col: Collector, path: str, found: int, expected: int,
                unit: str) -> None:
    if found == expected:
        col.add('ok', 'count', path, '', f'{found} {unit}')
    else:
        col.add('error', 'count', path, '', f'{found} {unit}',
                f'{expected} {unit}')


def image_pass(col: Collector, root: str, listed: Sequence[Tuple],
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
            problem, digest = inspect_image(img_path, decode, want_digest)
            problems[img_path] = problem
            if want_digest:
                digests[img_path] = digest
            if problem != NOT_FOUND:
                files.append(relpath(root, img_path))
            if problem is not None:
                col.add(
                    'error', 'image', source, where,
                    f'{relpath(osp.dirname(source), img_path)}: {problem}',
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


def parse_listing(col: Collector, path: str, reader: Callable,
                  files: List[str], root: str):
    """Parse one split file; a missing or malformed file is an error."""
    if not osp.isfile(path):
        col.add('error', 'file', path, '', 'split file not found',
                'an existing split file')
        return None
    files.append(relpath(root, path))
    try:
        return reader(path)
    except (AnnotationError, OSError) as exc:
        line = getattr(exc, 'line', None)
        col.add('error', 'file', path, f'line {line}' if line else '',
                f'cannot be parsed, so not checked further: {exc}')
    return None


# ------------------------------------------------------------------- format
def format_report(report: Report) -> str:
    """Render a report as text: findings per subject, then a summary.

    Args:
        report (Report): The report.

    Returns:
        str: The text, ending with a ``PASSED``/``FAILED`` line.
    """
    title = TITLES.get(report.benchmark, report.benchmark)
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
