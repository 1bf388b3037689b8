"""Write the generated mini-benchmark in the exact VTAB-1k folder layout.

::

    <root>/<task>/train800.txt  val200.txt  train800val200.txt  test.txt
    <root>/<task>/images/<split>/000000.jpg ...

Lines are ``images/<split>/<6-digit>.jpg <label>``, as in the NOAH/SSF
release, so :class:`mmtrpts.datasets.VTAB1k` (and any VTAB-1k code) reads it
unchanged.  As in the real release, ``train800val200`` holds its own copies
of the ``train800`` and ``val200`` images, in that order.
"""
import json
import os
import os.path as osp
from typing import Dict, Iterable, Optional

import cv2
import numpy as np

from .tasks import TARGET_TASKS, generate

# Bump when the renderers change, so cached benchmarks are rebuilt.
GENERATOR_VERSION = 1
DEFAULT_SIZES = dict(train800=800, val200=200, test=1000)
_STAMP = 'generator.json'


def _write_split(task_dir: str, split: str, images: np.ndarray,
                 labels: np.ndarray) -> None:
    image_dir = osp.join(task_dir, 'images', split)
    os.makedirs(image_dir, exist_ok=True)
    lines = []
    for i, (img, label) in enumerate(zip(images, labels)):
        rel = f'images/{split}/{i:06d}.jpg'
        ok = cv2.imwrite(
            osp.join(task_dir, rel), img[..., ::-1],
            [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise OSError(f'could not write {osp.join(task_dir, rel)}')
        lines.append(f'{rel} {int(label)}\n')
    with open(osp.join(task_dir, f'{split}.txt'), 'w') as f:
        f.writelines(lines)


def write_task(root: str, task: str, sizes: Optional[Dict[str, int]] = None,
               seed: int = 0) -> str:
    """Write one generated task; reuse it if an identical one exists.

    Args:
        root (str): Benchmark root (the ``data_root`` of ``VTAB1k``).
        task (str): A key of :data:`TARGET_TASKS`.
        sizes (dict, optional): Images per split (``train800``, ``val200``,
            ``test``); ``train800val200`` is their union.  Defaults to the
            VTAB-1k sizes 800 / 200 and a 1000-image test split.
        seed (int): Base seed; each split uses its own derived seed.

    Returns:
        str: The task folder.
    """
    if task not in TARGET_TASKS:
        raise KeyError(f'unknown generated task {task!r}; '
                       f'expected one of {sorted(TARGET_TASKS)}')
    sizes = dict(DEFAULT_SIZES, **(sizes or {}))
    spec = TARGET_TASKS[task]
    stamp = dict(version=GENERATOR_VERSION, task=task, seed=seed,
                 sizes=sizes, num_classes=spec.num_classes)
    task_dir = osp.join(root, task)
    stamp_file = osp.join(task_dir, _STAMP)
    if osp.isfile(stamp_file):
        with open(stamp_file) as f:
            if json.load(f) == stamp:
                return task_dir
    splits = {}
    for offset, split in enumerate(('train800', 'val200', 'test')):
        splits[split] = generate(spec, sizes[split], seed * 1000 + offset)
    splits['train800val200'] = tuple(
        np.concatenate([splits['train800'][i], splits['val200'][i]])
        for i in range(2))
    for split, (images, labels) in splits.items():
        _write_split(task_dir, split, images, labels)
    with open(stamp_file, 'w') as f:
        json.dump(stamp, f, indent=1)
    return task_dir


def write_benchmark(root: str, tasks: Iterable[str] = tuple(TARGET_TASKS),
                    sizes: Optional[Dict[str, int]] = None,
                    seed: int = 0) -> Dict[str, int]:
    """Write several generated tasks; returns ``{task: num_classes}``."""
    out = {}
    for task in tasks:
        write_task(root, task, sizes=sizes, seed=seed)
        out[task] = TARGET_TASKS[task].num_classes
    return out
