"""Shared fixtures: a small generated benchmark, tiny run configs and a
tiny token keep/fuse model."""
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List

import cv2
import mmtrpts  # noqa: F401  (stack fixes before any mmpretrain import)
import numpy as np
import pytest
import torch
from benchmark_data import write_benchmark_trees
import mmengine.config.config as mmengine_config
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

from mmtrpts.datasets.synthetic.mini_vtab import write_benchmark

# Components are registered into mmpretrain's registries, as in configs.
init_default_scope('mmpretrain')


def _unformatted(text, **kwargs):
    return text, False


# Test-process speed only: mmengine's Config.pretty_text runs yapf over the
# whole config text 6 times per Runner (logged config, dumped config.py,
# each checkpoint's meta), ~0.25 s each.  The text is valid Python without
# the formatting, so the suite skips it; subprocesses (tools) are unchanged.
mmengine_config.FormatCode = _unformatted

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PYTHON = sys.executable
SMALL_SIZES = dict(train800=48, val200=16, test=32)


@pytest.fixture(scope='session')
def mini_vtab(tmp_path_factory) -> str:
    """Two generated tasks in the VTAB-1k layout with small splits."""
    root = str(tmp_path_factory.mktemp('mini-vtab'))
    write_benchmark(root, tasks=('texture', 'location'), sizes=SMALL_SIZES)
    return root


@pytest.fixture(scope='session')
def benchmark_roots(tmp_path_factory) -> Dict[str, str]:
    """Generated VTAB-1k and FGVC trees for all 24 data sets (see
    ``benchmark_data.write_benchmark_trees``)."""
    return write_benchmark_trees(str(tmp_path_factory.mktemp('benchmarks')))


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory) -> Dict:
    """Two 32x32 images, their object masks, and configs and checkpoints of
    the embedded ViT as a TokenKeepFuseViT.

    Keys: ``images`` (paths), ``masks`` (``bool [2, 32, 32]``, the blob
    drawn into each image), ``root``, and ``(config, checkpoint)`` pairs
    ``select`` (keep rate 0.7 at blocks 1 and 3) and ``plain`` (no
    selection blocks).
    """
    root = tmp_path_factory.mktemp('tokens')
    rng = np.random.default_rng(0)
    images, masks = [], []
    yy, xx = np.mgrid[:32, :32]
    for i in range(2):
        path = str(root / f'image{i}.png')
        image = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
        blob = (yy - 8 - 16 * i)**2 + (xx - 20)**2 < 30
        image[blob] = (40, 200, 250)
        assert cv2.imwrite(path, image)
        images.append(path)
        masks.append(blob)
    run = dict(images=images, masks=np.stack(masks), root=root)
    base = osp.join(REPO, 'configs', 'embedded',
                    'vit-tiny_full-ft_mini-vtab.py')
    for name, backbone in [
        ('select', "dict(type='TokenKeepFuseViT', keep_rate=0.7, "
         'keep_layers=(1, 3), init_cfg=None)'),
        ('plain', "dict(type='TokenKeepFuseViT', init_cfg=None)")
    ]:
        config = str(root / f'{name}.py')
        with open(config, 'w') as f:
            f.write(f"_base_ = ['{base}']\n"
                    f'model = dict(backbone={backbone})\n')
        torch.manual_seed(0)
        model = MODELS.build(Config.fromfile(config).model)
        checkpoint = str(root / f'{name}.pth')
        torch.save({'meta': {}, 'state_dict': model.state_dict()}, checkpoint)
        run[name] = (config, checkpoint)
    return run


def write_backbone_checkpoint(path: str, **vit_args) -> str:
    """Save a random (seed 0) ``VisionTransformer`` as a backbone-only
    checkpoint, keys prefixed ``backbone.``: a stand-in pre-trained base."""
    torch.manual_seed(0)
    backbone = MODELS.build(dict(type='VisionTransformer', **vit_args))
    torch.save(
        dict(state_dict={
            f'backbone.{k}': v
            for k, v in backbone.state_dict().items()
        }), path)
    return path


def write_tiny_config(path: str,
                      data_root: str,
                      task: str = 'texture',
                      num_classes: int = 6,
                      max_epochs: int = 2,
                      extra: str = '',
                      head_classes: int = None,
                      base: str = 'vit-tiny_full-ft_mini-vtab.py',
                      batch_size: int = 8) -> str:
    """A config inheriting an embedded config, shrunk for tests.

    ``head_classes`` (default ``num_classes``) sets the model's class count;
    ``extra`` is appended verbatim; it must not re-assign ``model`` or a
    dataloader (that would drop the overrides made here).
    """
    for name in ('model', 'train_dataloader', 'val_dataloader',
                 'test_dataloader', 'data_preprocessor'):
        assert f'\n{name} =' not in f'\n{extra}', f'extra re-assigns {name}'
    head_classes = num_classes if head_classes is None else head_classes
    base = osp.join(REPO, 'configs', 'embedded', base)
    text = f"""
_base_ = ['{base}']
data_root = '{data_root}'
model = dict(
    backbone=dict(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  feedforward_channels=64),
        init_cfg=None),
    head=dict(num_classes={head_classes}, in_channels=32))
data_preprocessor = dict(num_classes={head_classes})
train_dataloader = dict(
    batch_size={batch_size},
    dataset=dict(data_root=data_root, task='{task}',
                 num_classes={num_classes}))
val_dataloader = dict(
    batch_size=16,
    dataset=dict(data_root=data_root, task='{task}',
                 num_classes={num_classes}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs={max_epochs}, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
{extra}
"""
    with open(path, 'w') as f:
        f.write(text)
    return path


def run_tool(args: List[str],
             cwd: str = REPO,
             env_extra=None,
             timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a command, returning the completed process (output captured)."""
    env = dict(os.environ, PYTHONWARNINGS='ignore', **(env_extra or {}))
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f'exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n'
        f'--- stderr\n{proc.stderr[-6000:]}')
