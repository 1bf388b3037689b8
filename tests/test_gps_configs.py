"""GPS-rule baseline configs: values from the GPS scripts, smoke runs."""
import glob
import os.path as osp

import pytest
from benchmark_data import tiny_smoke_options
from conftest import REPO
from mmengine.config import Config
from mmengine.runner import Runner

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'gps', '*.py')))
# (K, lr, total batch) from docs/methods/gps.md §3.
EXPECTED = {
    'vit-b_cub.py': (2, 3e-3, 32),
    'vit-b_vtab1k-cifar100.py': (1, 1e-2, 32),
    'vit-b_vtab1k-camelyon.py': (2, 4e-3, 32),
    'vit-b_vtab1k-dsprites-loc.py': (1, 7e-3, 32),
}


def test_one_config_per_benchmark_group():
    assert sorted(osp.basename(c) for c in CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize('config', CONFIGS, ids=osp.basename)
def test_gps_config_values_and_smoke_run(config, benchmark_roots, tmp_path):
    cfg = Config.fromfile(config)
    k, lr, total = EXPECTED[osp.basename(config)]
    hook = cfg.custom_hooks[0]
    assert (hook.type, hook.rule, hook.k) == ('FisherSelectionHook', 'gps', k)
    assert 'token_placement' not in hook
    assert cfg.model.backbone.type == 'VisionTransformer'
    assert cfg.optim_wrapper.optimizer.lr == lr
    assert cfg.train_dataloader.batch_size * 8 == total == \
        cfg.auto_scale_lr.base_batch_size

    cfg.merge_from_dict(
        tiny_smoke_options(cfg.train_dataloader.dataset.type, benchmark_roots,
                           str(tmp_path)))
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    assert 0 <= runner.test()['accuracy/top1'] <= 100
    assert osp.isfile(osp.join(str(tmp_path), 'selection', 'selection.json'))
