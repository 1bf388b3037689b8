"""VTAB-1k in the NOAH/SSF image-file layout (docs/benchmarks.md §1)."""
import logging
import os.path as osp
from typing import List, Optional, Sequence, Tuple

from mmengine.logging import print_log
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from .annotation_io import read_label_lines
from .source_context import SourceContextMixin
from .vtab_tasks import VTAB_SPLIT_SIZES, VTAB_SPLITS, TaskInfo, find_task

__all__ = ['VTAB1k']

_LAYOUT = ('Expected the VTAB-1k layout <data_root>/<task>/'
           '{train800,val200,train800val200,test}.txt with lines '
           "'images/<split>/000000.jpg <label>' relative to the task folder")
_SPLIT_MODES = {
    # split_mode: (split for training, split for evaluation)
    'val': ('train800', 'val200'),
    'test': ('train800val200', 'test'),
}


@DATASETS.register_module()
class VTAB1k(SourceContextMixin, BaseDataset):
    """A VTAB-1k task stored as image files plus ``<split>.txt`` lists.

    Layout (NOAH/SSF release; docs/benchmarks.md §1)::

        <data_root>/<task>/train800.txt  val200.txt  train800val200.txt
        <data_root>/<task>/test.txt
        <data_root>/<task>/images/<split>/000000.jpg ...

    Each line is ``images/<split>/000000.jpg <int label>`` (path relative
    to the task folder, split on the last space). Every malformed line is
    an error naming the file and line; nothing is skipped.

    The 19 tasks are known by folder name or alias (``cifar100`` ->
    ``cifar``, ``clevr-count`` -> ``clevr_count``, ...; see
    :mod:`mmtrpts.datasets.vtab_tasks`). Any other folder under
    ``data_root`` works when ``num_classes`` is given.

    Example config::

        train_dataloader = dict(
            dataset=dict(
                type='VTAB1k',
                data_root='data/vtab-1k',
                task='cifar100',
                split='train800val200',
                pipeline=[
                    dict(type='LoadImageFromFile'),
                    dict(type='Resize', scale=(224, 224),
                         interpolation='bicubic'),
                    dict(type='PackInputs'),
                ]))

    Args:
        data_root (str): Folder that holds the task folders.
        task (str): Task folder name or alias.
        split (str, optional): One of ``'train800'``, ``'val200'``,
            ``'train800val200'`` and ``'test'``. Defaults to None, which
            means ``'train800val200'`` unless ``split_mode`` is given.
        num_classes (int, optional): Number of classes. Required for a task
            that is not one of the 19; for a known task it must match the
            table. Labels must lie in ``[0, num_classes)``.
        split_mode (str, optional): Shortcut instead of ``split``:
            ``'val'`` reads train800 (or val200 when ``test_mode=True``),
            ``'test'`` reads train800val200 (or test when
            ``test_mode=True``). Defaults to None.
        pipeline (Sequence): Processing pipeline. Defaults to ``()``.
        test_mode (bool): Whether the dataset is used for evaluation.
            Defaults to False.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.
            BaseDataset` (``metainfo``, ``classes``, ``indices``,
            ``lazy_init``, ...).

    Each data info holds ``img_path`` (absolute), ``gt_label`` (int) and
    ``ann_line`` (1-based line number in the split file). ``metainfo``
    holds ``classes`` (names where known, else ``'0'..'N-1'``), ``task``,
    ``task_group`` and ``split``.
    """

    def __init__(self,
                 data_root: str,
                 task: str,
                 split: Optional[str] = None,
                 num_classes: Optional[int] = None,
                 split_mode: Optional[str] = None,
                 pipeline: Sequence = (),
                 test_mode: bool = False,
                 **kwargs) -> None:
        if not data_root:
            raise ValueError('VTAB1k needs data_root, the folder that '
                             f'holds the task folders. {_LAYOUT}')
        self.task_info: Optional[TaskInfo] = find_task(task)
        self.num_classes = self._check_num_classes(task, num_classes)
        self.split = self._resolve_split(split, split_mode, test_mode)
        self.data_root_abs = osp.abspath(osp.expanduser(data_root))
        self.task_dir = self._find_task_dir(task)
        self.task_name = osp.basename(self.task_dir)

        user_meta = dict(kwargs.pop('metainfo', None) or {})
        meta_classes = user_meta.pop('classes', None)
        classes = kwargs.pop('classes', None)
        if classes is None:
            classes = meta_classes
        metainfo = dict(classes=self._check_classes(classes))
        metainfo.update(user_meta)
        super().__init__(
            ann_file=osp.join(self.task_dir, f'{self.split}.txt'),
            metainfo=metainfo,
            data_root=self.data_root_abs,
            data_prefix=dict(img_path=self.task_dir),
            pipeline=pipeline,
            test_mode=test_mode,
            **kwargs)
        # Set after init: mmengine treats str metainfo values as file paths.
        self._metainfo.update(
            task=self.task_name,
            task_group=self.task_info.group if self.task_info else None,
            split=self.split)

    def _check_num_classes(self, task: str, num_classes: Optional[int]) -> int:
        """Return the number of classes, checked against the table."""
        if num_classes is not None and (isinstance(num_classes, bool)
                                        or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f'num_classes must be a positive integer, got '
                             f'{num_classes!r} (task {task!r})')
        if self.task_info is None:
            if num_classes is None:
                raise ValueError(
                    f'{task!r} is not one of the 19 VTAB-1k tasks, so '
                    'num_classes is unknown: pass num_classes=<N> to use '
                    'your own task folder (or fix the task name; see '
                    'mmtrpts.datasets.vtab_tasks.resolve_task)')
            return num_classes
        expected = self.task_info.num_classes
        if num_classes is not None and num_classes != expected:
            raise ValueError(
                f'num_classes={num_classes} disagrees with VTAB-1k task '
                f'{self.task_info.folder!r}, which has {expected} classes')
        return expected

    @staticmethod
    def _resolve_split(split: Optional[str], split_mode: Optional[str],
                       test_mode: bool) -> str:
        """Resolve ``split``/``split_mode`` to one split name."""
        if split_mode is not None:
            if split is not None:
                raise ValueError(f'Give either split ({split!r}) or '
                                 f'split_mode ({split_mode!r}), not both')
            if split_mode not in _SPLIT_MODES:
                raise ValueError(f'split_mode must be one of '
                                 f'{sorted(_SPLIT_MODES)}, got {split_mode!r}')
            return _SPLIT_MODES[split_mode][1 if test_mode else 0]
        split = 'train800val200' if split is None else split
        if split not in VTAB_SPLITS:
            raise ValueError(
                f'split must be one of {list(VTAB_SPLITS)}, got {split!r}')
        return split

    def _candidate_dirs(self, task: str) -> List[str]:
        """Folders that may hold the task: canonical name, then as given."""
        names = [task]
        if self.task_info is not None:
            names = [self.task_info.folder, task]
        dirs = []
        for name in names:
            path = osp.join(self.data_root_abs, name)
            if path not in dirs:
                dirs.append(path)
        return dirs

    def _find_task_dir(self, task: str) -> str:
        """The first existing candidate folder, else the first candidate."""
        self._tried_dirs = self._candidate_dirs(task)
        for path in self._tried_dirs:
            if osp.isdir(path):
                return path
        return self._tried_dirs[0]

    def _check_classes(self, classes) -> Tuple[str, ...]:
        """Class names: user-given, from the table, or ``'0'..'N-1'``."""
        if classes is None:
            if self.task_info is not None and self.task_info.classes:
                return tuple(self.task_info.classes)
            return tuple(str(i) for i in range(self.num_classes))
        if isinstance(classes, str):
            raise ValueError('VTAB1k takes classes as a list of names, '
                             f'not a string: {classes!r}')
        classes = tuple(classes)
        if len(classes) != self.num_classes:
            raise ValueError(f'{len(classes)} class names given, but the '
                             f'task has num_classes={self.num_classes}')
        return classes

    def _check_layout(self) -> None:
        """Raise FileNotFoundError naming what is missing."""
        if not osp.isdir(self.data_root_abs):
            raise FileNotFoundError(
                f'VTAB-1k data_root not found: {self.data_root_abs}. '
                f'{_LAYOUT}')
        if not osp.isdir(self.task_dir):
            tried = ', '.join(self._tried_dirs)
            raise FileNotFoundError(
                f'VTAB-1k task folder not found (tried {tried}). {_LAYOUT}')

    def load_data_list(self) -> List[dict]:
        """Parse ``<task>/<split>.txt`` into data infos."""
        self._check_layout()
        entries = read_label_lines(
            self.ann_file, self.num_classes, hint=_LAYOUT)
        data_list = [
            dict(
                img_path=osp.join(self.task_dir, e.rel_path),
                gt_label=e.label,
                ann_line=e.line_no) for e in entries
        ]
        self._warn_on_unexpected_size(len(data_list))
        return data_list

    def _warn_on_unexpected_size(self, size: int) -> None:
        """Warn when a known task's split has an unexpected length."""
        if self.task_info is None:
            return
        expected = VTAB_SPLIT_SIZES.get(self.split, self.task_info.test_size)
        if size != expected:
            print_log(
                f'{self.ann_file} has {size} samples; VTAB-1k '
                f'{self.task_info.folder}/{self.split} should have '
                f'{expected}. Is the download complete?',
                logger='current',
                level=logging.WARNING)

    def sample_source(self, data_info: dict) -> str:
        """Where the sample was listed (for error messages)."""
        return f'{self.ann_file}, line {data_info.get("ann_line")}'

    def extra_repr(self) -> List[str]:
        """Extra lines for ``repr``."""
        return [
            f'Task: \t{self.task_name}', f'Split: \t{self.split}',
            f'Number of classes: \t{self.num_classes}',
            f'Annotation file: \t{self.ann_file}'
        ]
