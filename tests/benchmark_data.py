"""Generated VTAB-1k / FGVC trees and tiny overrides for config smoke runs.

:func:`write_benchmark_trees` writes every VTAB-1k task and FGVC data set
in the real layouts (tiny JPEGs); :func:`tiny_smoke_options` returns the
``--cfg-options``-style overrides that shrink any ViT-B benchmark config to
DeiT-tiny's arch with 32 px patches at the configs' 224 px, 4 training and
2 test images, one epoch (2 iterations), data loaded from those trees.
Method-specific overrides (e.g. a hook's budget) are added by each test.
"""
import json
import os
import os.path as osp
from typing import Dict

import numpy as np
from PIL import Image

from mmtrpts.datasets.fgvc_meta import FGVC_DATASETS
from mmtrpts.datasets.vtab_tasks import VTAB_TASKS

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')

#: The shared tiny overrides of every smoke run (data roots and the work
#: dir are added by :func:`tiny_smoke_options`).
TINY = {
    # mmpretrain's smallest ViT arch (192 dims, 12 layers), 49 patches.
    'model.backbone.arch': 'deit-tiny',
    'model.backbone.patch_size': 32,
    'model.backbone.init_cfg': None,
    'model.head.in_channels': 192,
    'train_dataloader.batch_size': 2,
    'train_dataloader.dataset.indices': 4,
    'train_cfg.max_epochs': 1,
    'train_cfg.val_interval': 1,
    'default_hooks.logger.interval': 1,
}
for _loader in LOADERS:
    TINY[f'{_loader}.num_workers'] = 0
    TINY[f'{_loader}.persistent_workers'] = False
    # mmengine serialises a dataset's list with a gc.collect() each time
    # (~0.2 s in a large test process); 4 samples need no serialising.
    TINY[f'{_loader}.dataset.serialize_data'] = False
for _loader in LOADERS[1:]:
    TINY[f'{_loader}.batch_size'] = 2
    TINY[f'{_loader}.dataset.indices'] = 2


def tiny_smoke_options(dataset_type: str, roots: Dict[str, str],
                       work_dir: str) -> dict:
    """:data:`TINY` plus the generated data root and ``work_dir``.

    Args:
        dataset_type (str): ``'VTAB1k'`` or ``'FGVC'``.
        roots (dict): The roots returned by :func:`write_benchmark_trees`.
        work_dir (str): The run's work dir.
    """
    options = dict(TINY, work_dir=work_dir)
    for loader in LOADERS:
        options[f'{loader}.dataset.data_root'] = roots[dataset_type]
    return options


def _write_vtab(root: str, image: bytes) -> None:
    """Every VTAB-1k task: 6 training and 4 test images in the real layout."""
    for info in VTAB_TASKS.values():
        task_dir = osp.join(root, info.folder)
        splits = {'train800': 4, 'val200': 2, 'test': 4}
        for split, count in splits.items():
            os.makedirs(osp.join(task_dir, 'images', split), exist_ok=True)
            lines = []
            for i in range(count):
                rel = f'images/{split}/{i:06d}.jpg'
                with open(osp.join(task_dir, rel), 'wb') as f:
                    f.write(image)
                lines.append(f'{rel} {i % info.num_classes}')
            with open(osp.join(task_dir, f'{split}.txt'), 'w') as f:
                f.write('\n'.join(lines) + '\n')
        with open(osp.join(task_dir, 'train800val200.txt'), 'w') as f:
            for split in ('train800', 'val200'):
                with open(osp.join(task_dir, f'{split}.txt')) as src:
                    f.write(src.read())


def _write_fgvc(root: str, image: bytes) -> None:
    """Every FGVC data set (GPS folder names and image sub-folders): one
    training image per class (the label map needs all of them), 2 val and
    3 test images; class ids are 1-based and non-contiguous as in VPT's."""
    for info in FGVC_DATASETS.values():
        image_dir = osp.join(root, info.gps_folder, info.image_subfolder)
        os.makedirs(image_dir, exist_ok=True)
        ids = [3 * c + 1 for c in range(info.num_classes)]
        splits = {
            'train': {f'train_{c}.jpg': cid for c, cid in enumerate(ids)},
            'val': {f'val_{i}.jpg': ids[i] for i in range(2)},
            'test': {f'test_{i}.jpg': ids[i] for i in range(3)},
        }
        for split, entries in splits.items():
            for rel in entries:
                with open(osp.join(image_dir, rel), 'wb') as f:
                    f.write(image)
            with open(osp.join(root, info.gps_folder, f'{split}.json'),
                      'w') as f:
                json.dump(entries, f)


def write_benchmark_trees(base: str) -> Dict[str, str]:
    """Write all 24 data sets under ``base``.

    Returns:
        dict: ``{'VTAB1k': <vtab-1k root>, 'FGVC': <fgvc root>}``.
    """
    sample = osp.join(base, 'sample.jpg')
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
        sample, format='JPEG')
    with open(sample, 'rb') as f:
        image = f.read()
    roots = dict(VTAB1k=osp.join(base, 'vtab-1k'),
                 FGVC=osp.join(base, 'fgvc'))
    _write_vtab(roots['VTAB1k'], image)
    _write_fgvc(roots['FGVC'], image)
    return roots
