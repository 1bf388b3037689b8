"""Metadata of the 19 VTAB-1k tasks (docs/benchmarks.md §1).

The canonical key of a task is its folder name in the NOAH/SSF release
(``cifar``, ``oxford_flowers102``, ...). :func:`resolve_task` also accepts
the config token (``cifar100``, ``clevr-count``), the names used by the GPS
scripts (``cifar100``, ``flowers102``, ``pets``) and a few common spellings;
matching ignores case and treats ``-`` and ``_`` alike.

Class names are given only where the TFDS label order is certain; for the
other tasks ``classes`` is None and datasets name classes ``'0'..'N-1'``.
"""
from typing import Dict, NamedTuple, Optional, Tuple

from mmpretrain.datasets.categories import (CIFAR100_CATEGORIES,
                                            DTD_CATEGORIES)

__all__ = [
    'TaskInfo', 'VTAB_TASKS', 'VTAB_GROUPS', 'VTAB_SPLITS', 'VTAB_SPLIT_SIZES',
    'normalize_task_name', 'find_task', 'resolve_task'
]

#: The four split files of every task folder.
VTAB_SPLITS = ('train800', 'val200', 'train800val200', 'test')
#: Number of samples of the fixed-size splits (the test size is per task).
VTAB_SPLIT_SIZES = {'train800': 800, 'val200': 200, 'train800val200': 1000}


class TaskInfo(NamedTuple):
    """One VTAB-1k task.

    Attributes:
        folder (str): Canonical folder name (the key).
        token (str): Config-name token (no ``_``).
        group (str): ``'natural'``, ``'specialized'`` or ``'structured'``.
        num_classes (int): Number of classes.
        test_size (int): Number of test images.
        aliases (tuple[str]): Other accepted names.
        classes (tuple[str], optional): Class names in label order, or None
            when the TFDS order is not known for sure.
    """

    folder: str
    token: str
    group: str
    num_classes: int
    test_size: int
    aliases: Tuple[str, ...] = ()
    classes: Optional[Tuple[str, ...]] = None


_EUROSAT = ('AnnualCrop', 'Forest', 'HerbaceousVegetation', 'Highway',
            'Industrial', 'Pasture', 'PermanentCrop', 'Residential', 'River',
            'SeaLake')
_RETINOPATHY = ('No DR', 'Mild', 'Moderate', 'Severe', 'Proliferative DR')

_TASK_LIST = (
    # natural
    TaskInfo('cifar', 'cifar100', 'natural', 100,
             10000, ('cifar100', 'cifar_100', 'cifar-100'),
             tuple(CIFAR100_CATEGORIES)),
    TaskInfo('caltech101', 'caltech101', 'natural', 102, 6084, ()),
    TaskInfo('dtd', 'dtd', 'natural', 47, 1880, (), tuple(DTD_CATEGORIES)),
    TaskInfo('oxford_flowers102', 'flowers102', 'natural', 102, 6149,
             ('flowers102', 'oxford_flowers')),
    TaskInfo('oxford_iiit_pet', 'pets', 'natural', 37, 3669,
             ('pets', 'oxford_pets')),
    TaskInfo('svhn', 'svhn', 'natural', 10, 26032, ('svhn_cropped', ),
             tuple(str(d) for d in range(10))),
    TaskInfo('sun397', 'sun397', 'natural', 397, 21750),
    # specialized
    TaskInfo('patch_camelyon', 'camelyon', 'specialized', 2, 32768,
             ('camelyon', 'pcam'), ('no tumor', 'tumor')),
    TaskInfo('eurosat', 'eurosat', 'specialized', 10, 5400, (), _EUROSAT),
    TaskInfo('resisc45', 'resisc45', 'specialized', 45, 6300),
    TaskInfo('diabetic_retinopathy', 'retinopathy', 'specialized', 5, 42670,
             ('retinopathy', ), _RETINOPATHY),
    # structured
    TaskInfo('clevr_count', 'clevr-count', 'structured', 8, 15000,
             ('clevr-count', ), tuple(str(n) for n in range(3, 11))),
    TaskInfo('clevr_dist', 'clevr-dist', 'structured', 6, 15000,
             ('clevr-dist', )),
    TaskInfo('dmlab', 'dmlab', 'structured', 6, 22735),
    TaskInfo('kitti', 'kitti', 'structured', 4, 711, ('kitti_dist', )),
    TaskInfo('dsprites_loc', 'dsprites-loc', 'structured', 16, 73728,
             ('dsprites-loc', )),
    TaskInfo('dsprites_ori', 'dsprites-ori', 'structured', 16, 73728,
             ('dsprites-ori', )),
    TaskInfo('smallnorb_azi', 'smallnorb-azi', 'structured', 18, 12150,
             ('smallnorb-azi', )),
    TaskInfo('smallnorb_ele', 'smallnorb-ele', 'structured', 9, 12150,
             ('smallnorb-ele', )),
)

#: Canonical folder name -> :class:`TaskInfo`, in the usual table order.
VTAB_TASKS: Dict[str, TaskInfo] = {t.folder: t for t in _TASK_LIST}

#: Group -> folder names of its tasks.
VTAB_GROUPS: Dict[str, Tuple[str, ...]] = {
    group: tuple(t.folder for t in _TASK_LIST if t.group == group)
    for group in ('natural', 'specialized', 'structured')
}


def normalize_task_name(name: str) -> str:
    """Lower-case ``name`` and map ``-`` to ``_`` for alias matching."""
    return name.strip().lower().replace('-', '_')


def _build_alias_index() -> Dict[str, str]:
    index: Dict[str, str] = {}
    for info in _TASK_LIST:
        for name in (info.folder, info.token) + info.aliases:
            key = normalize_task_name(name)
            owner = index.setdefault(key, info.folder)
            assert owner == info.folder, f'alias {name!r} is ambiguous'
    return index


_ALIASES = _build_alias_index()


def find_task(name: str) -> Optional[TaskInfo]:
    """Look up a task by folder name or alias.

    Args:
        name (str): Folder name, config token or alias.

    Returns:
        TaskInfo, optional: The task, or None if ``name`` is unknown.
    """
    folder = _ALIASES.get(normalize_task_name(name))
    return None if folder is None else VTAB_TASKS[folder]


def resolve_task(name: str) -> TaskInfo:
    """Look up a task by folder name or alias; raise if it is unknown.

    Args:
        name (str): Folder name, config token or alias.

    Returns:
        TaskInfo: The task.

    Raises:
        ValueError: ``name`` is not one of the 19 tasks; the message lists
            the valid folder names and tokens.
    """
    info = find_task(name)
    if info is None:
        valid = ', '.join(f'{t.folder} ({t.token})' for t in _TASK_LIST)
        raise ValueError(f'Unknown VTAB-1k task {name!r}. Valid tasks '
                         f'(folder (config token)): {valid}')
    return info
