"""Pure-python readers for the annotation files of the benchmark datasets.

Two formats are supported:

* **line files** (VTAB-1k, NOAH/SSF layout): one sample per line,
  ``<relative/path.jpg> <int label>``, path and label separated by the
  *last* space;
* **VPT json splits** (FGVC): one json object mapping a relative image path
  to an integer class id.

Every error names the file and, for line files, the 1-based line number,
and says what was expected.  Nothing is skipped silently: an empty line is
an error; only the single newline that ends the file is accepted.

This module has no mmengine/mmpretrain dependency so it can be reused by
tools and tested in isolation.
"""
import json
import os.path as osp
import re
from typing import Dict, List, NamedTuple, Optional, Sequence

__all__ = [
    'AnnotationError', 'LabelLine', 'JsonEntry', 'read_label_lines',
    'read_vpt_json', 'exception_with_context'
]

_INT_RE = re.compile(r'[+-]?[0-9]+')
_LINE_FORMAT = "'<relative/image/path> <integer label>'"


class AnnotationError(ValueError):
    """A malformed annotation file.

    Attributes:
        path (str): The annotation file.
        line (int, optional): The 1-based line number, for line files.
    """

    def __init__(self,
                 message: str,
                 path: str,
                 line: Optional[int] = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class LabelLine(NamedTuple):
    """One sample of a line file."""

    rel_path: str
    label: int
    line_no: int


class JsonEntry(NamedTuple):
    """One sample of a VPT json split."""

    rel_path: str
    class_id: int


def _read_text(path: str, hint: str = '') -> str:
    """Read a whole utf-8 text file with errors that name it."""
    if not osp.isfile(path):
        msg = f'Annotation file not found: {path}'
        if hint:
            msg += f'. {hint}'
        raise FileNotFoundError(msg)
    try:
        with open(path, encoding='utf-8') as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise AnnotationError(f'{path}: not a utf-8 text file ({exc})',
                              path) from exc


def read_label_lines(path: str,
                     num_classes: Optional[int] = None,
                     hint: str = '') -> List[LabelLine]:
    """Parse a ``path label`` line file.

    Args:
        path (str): The annotation file.
        num_classes (int, optional): If given, every label must lie in
            ``[0, num_classes)``. Negative labels are always rejected.
        hint (str): Extra text for the file-not-found message, e.g. the
            expected folder layout.

    Returns:
        list[LabelLine]: ``(rel_path, label, line_no)`` in file order;
        ``line_no`` is 1-based.

    Raises:
        FileNotFoundError: The file does not exist.
        AnnotationError: A line is empty or malformed, a label is not an
            integer or out of range, or the file holds no samples.
    """
    text = _read_text(path, hint)
    lines = text.split('\n')
    if lines and lines[-1] == '':
        lines.pop()  # the newline that terminates the last line
    if not lines:
        raise AnnotationError(
            f'{path}: the file is empty; expected lines of the form '
            f'{_LINE_FORMAT}', path)
    entries = []
    for line_no, raw in enumerate(lines, start=1):
        entries.append(_parse_line(raw, path, line_no, num_classes))
    return entries


def _parse_line(raw: str, path: str, line_no: int,
                num_classes: Optional[int]) -> LabelLine:
    """Parse one line of a line file."""
    where = f'{path}, line {line_no}'
    line = raw[:-1] if raw.endswith('\r') else raw
    if line.strip() == '':
        raise AnnotationError(
            f'{where}: empty line; expected {_LINE_FORMAT} (only the final '
            'newline of the file may be followed by nothing)', path, line_no)
    if ' ' not in line:
        raise AnnotationError(
            f'{where}: no space in {line!r}; expected {_LINE_FORMAT}', path,
            line_no)
    rel_path, label_str = line.rsplit(' ', 1)
    if rel_path.strip() == '':
        raise AnnotationError(
            f'{where}: empty image path in {line!r}; expected '
            f'{_LINE_FORMAT}', path, line_no)
    if rel_path != rel_path.strip():
        raise AnnotationError(
            f'{where}: image path {rel_path!r} has leading or trailing '
            'whitespace; separate path and label by exactly one space', path,
            line_no)
    if not _INT_RE.fullmatch(label_str):
        raise AnnotationError(
            f'{where}: label {label_str!r} is not an integer; expected '
            f'{_LINE_FORMAT}', path, line_no)
    label = int(label_str)
    _check_label(label, where, path, line_no, num_classes)
    return LabelLine(rel_path, label, line_no)


def _check_label(label: int, where: str, path: str, line_no: int,
                 num_classes: Optional[int]) -> None:
    """Reject negative labels and labels ``>= num_classes``."""
    if label < 0:
        raise AnnotationError(
            f'{where}: negative label {label}; expected 0 <= label', path,
            line_no)
    if num_classes is not None and label >= num_classes:
        raise AnnotationError(
            f'{where}: label {label} is out of range; expected '
            f'0 <= label < num_classes={num_classes}', path, line_no)


def _no_duplicates(path: str):
    """json ``object_pairs_hook`` that rejects repeated keys."""

    def hook(pairs: Sequence) -> dict:
        result = {}
        for key, value in pairs:
            if key in result:
                raise AnnotationError(
                    f'{path}: duplicate key {key!r}; every image may appear '
                    'only once', path)
            result[key] = value
        return result

    return hook


def read_vpt_json(path: str, hint: str = '') -> List[JsonEntry]:
    """Parse a VPT json split ``{"relative/path.jpg": class_id, ...}``.

    Args:
        path (str): The json file.
        hint (str): Extra text for the file-not-found message.

    Returns:
        list[JsonEntry]: ``(rel_path, class_id)`` in file order. Class ids
        are returned as stored (not remapped).

    Raises:
        FileNotFoundError: The file does not exist.
        AnnotationError: Invalid json, not an object, empty, an empty or
            absolute key, a duplicate key, or a class id that is not a
            non-negative integer.
    """
    text = _read_text(path, hint)
    try:
        data: Dict = json.loads(text, object_pairs_hook=_no_duplicates(path))
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f'{path}: invalid json at line {exc.lineno}, column '
            f'{exc.colno}: {exc.msg}; expected an object '
            '{"relative/path.jpg": class_id, ...}', path, exc.lineno) from exc
    if not isinstance(data, dict):
        raise AnnotationError(
            f'{path}: top-level json value is a {type(data).__name__}; '
            'expected an object {"relative/path.jpg": class_id, ...}', path)
    if not data:
        raise AnnotationError(
            f'{path}: the json object is empty; expected '
            '{"relative/path.jpg": class_id, ...}', path)
    entries = []
    for key, value in data.items():
        where = f'{path}, key {key!r}'
        if key.strip() == '':
            raise AnnotationError(f'{where}: empty image path', path)
        if osp.isabs(key):
            raise AnnotationError(
                f'{where}: absolute image path; expected a path relative '
                'to the image folder', path)
        # bool is a subclass of int: reject it explicitly.
        if isinstance(value, bool) or not isinstance(value, int):
            raise AnnotationError(
                f'{where}: class id {value!r} is not an integer', path)
        if value < 0:
            raise AnnotationError(
                f'{where}: negative class id {value}; expected an integer '
                '>= 0', path)
        entries.append(JsonEntry(key, value))
    return entries


def exception_with_context(exc: Exception, context: str) -> Exception:
    """Build an exception like ``exc`` whose message starts with context.

    The new exception has the class of ``exc`` when that class can be built
    from a single message string and prints it unchanged; otherwise it is a
    ``RuntimeError``. Raise it ``from exc`` to keep the original traceback.

    Args:
        exc (Exception): The original exception.
        context (str): What was being done, e.g. the image and its source.

    Returns:
        Exception: The exception to raise.
    """
    message = f'{context}: {type(exc).__name__}: {exc}'
    try:
        new_exc = type(exc)(message)
    except Exception:  # constructor needs other arguments
        return RuntimeError(message)
    if str(new_exc) != message:  # e.g. KeyError quotes its message
        return RuntimeError(message)
    return new_exc
