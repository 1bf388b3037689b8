"""The 24 benchmark configs: parse, build, and a 2-iteration CPU smoke run.

Every ``configs/trpts/*.py`` is checked against the task tables, its real
model (ViT-B/16 + keep/fuse) and dataset classes are built, and it trains
2 iterations, evaluates and tests on generated data in the real VTAB-1k /
FGVC layouts, with the shared tiny overrides of ``benchmark_data.TINY``
(DeiT-tiny's arch with 32 px patches at the configs' 224 px, 4 training
and 2 test images) plus :data:`TINY_TRPTS`.
"""
import glob
import os.path as osp

import pytest
from benchmark_data import tiny_smoke_options
from conftest import PYTHON, REPO, assert_ok, run_tool
from mmengine.config import Config
from mmengine.runner import Runner
from mmpretrain.registry import DATASETS, MODELS

from mmtrpts.datasets.fgvc_meta import FGVC_DATASETS
from mmtrpts.datasets.vtab_tasks import VTAB_TASKS, resolve_task

CONFIG_DIR = osp.join(REPO, 'configs', 'trpts')
VTAB_CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, 'vit-b_vtab1k-*.py')))
FGVC_CONFIGS = [osp.join(CONFIG_DIR, f'vit-b_{name}.py')
                for name in FGVC_DATASETS]
ALL_CONFIGS = VTAB_CONFIGS + FGVC_CONFIGS
DIST_TRAIN = osp.join(REPO, 'tools', 'dist_train.sh')

#: TR-PTS hook overrides on top of the shared tiny model/data overrides.
TINY_TRPTS = {
    # The benchmark budgets (0.34% / 0.60%) are below what a tiny ViT's
    # biases and head already take: an explicit M keeps the TR-PTS rule.
    'custom_hooks.0.target_ratio': None,
    'custom_hooks.0.m_percent': 5.0,
    'custom_hooks.0.batch_size': 4,
    # The density plot is tested in test_trpts_runner.py (0.3 s a run).
    'custom_hooks.0.save_plot': False,
}


def _expected(dataset: dict):
    """(data-set key, number of classes) of a dataset config, from the
    project's task tables."""
    if dataset['type'] == 'VTAB1k':
        info = resolve_task(dataset['task'])
        return info.folder, info.num_classes
    info = FGVC_DATASETS[dataset['dataset']]
    return info.name, info.num_classes


def test_one_config_per_data_set():
    tokens = sorted(osp.basename(p)[len('vit-b_vtab1k-'):-3]
                    for p in VTAB_CONFIGS)
    assert tokens == sorted(info.token for info in VTAB_TASKS.values())
    assert all(osp.isfile(p) for p in FGVC_CONFIGS)
    assert osp.isfile(osp.join(CONFIG_DIR, 'vit-b_cub.py'))
    assert len(ALL_CONFIGS) == 24


@pytest.mark.parametrize('config', ALL_CONFIGS, ids=osp.basename)
def test_config_parses_and_builds(config, benchmark_roots):
    cfg = Config.fromfile(config)
    key, num_classes = _expected(cfg.train_dataloader.dataset)
    dataset_type = cfg.train_dataloader.dataset.type
    # The task is set consistently in all three loaders and the head.
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[loader].dataset
        assert dataset.type == dataset_type
        assert _expected(dataset)[0] == key
    assert cfg.train_dataloader.dataset.split == (
        'train800val200' if dataset_type == 'VTAB1k' else 'trainval')
    assert cfg.test_dataloader.dataset.split == 'test'
    assert cfg.model.head.num_classes == num_classes
    assert cfg.data_preprocessor.num_classes == num_classes
    # Per-GPU batch for 8 GPUs; auto_scale_lr knows the total.
    assert cfg.train_dataloader.batch_size * 8 == \
        cfg.auto_scale_lr.base_batch_size
    lr = cfg.optim_wrapper.optimizer.lr
    assert cfg.param_scheduler[0].start_factor * lr == pytest.approx(1e-7)
    assert cfg.optim_wrapper.optimizer.type == 'Adam'
    assert cfg.optim_wrapper.optimizer.weight_decay == 0
    assert cfg.train_cfg.max_epochs == 100
    hook = cfg.custom_hooks[0]
    assert hook.type == 'FisherSelectionHook' and hook.rule == 'trpts'
    assert hook.target_ratio == (0.0034 if dataset_type == 'VTAB1k' else
                                 0.0060)
    assert hook.token_placement == dict(mode='sparse', num_blocks=3)
    assert cfg.model.backbone.init_cfg.checkpoint == cfg.pretrained

    model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == 'TokenKeepFuseViT'
    assert model.backbone.keep_rate == 0.95
    assert model.backbone.keep_layers == []  # placed by the hook
    assert model.head.fc.out_features == num_classes
    dataset = DATASETS.build(
        dict(cfg.test_dataloader.dataset,
             data_root=benchmark_roots[dataset_type]))
    assert len(dataset.metainfo['classes']) == num_classes


@pytest.mark.parametrize('config', ALL_CONFIGS, ids=osp.basename)
def test_config_smoke_run_trains_and_evaluates(config, benchmark_roots,
                                               tmp_path):
    cfg = Config.fromfile(config)
    options = tiny_smoke_options(cfg.train_dataloader.dataset.type,
                                 benchmark_roots, str(tmp_path))
    cfg.merge_from_dict(dict(options, **TINY_TRPTS))
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2  # 4 images, batch 2, one epoch
    metrics = runner.test()
    assert 0 <= metrics['accuracy/top1'] <= 100
    backbone = runner.model.backbone
    assert len(backbone.keep_layers) == 3  # co-selection placed tokens
    assert osp.isfile(osp.join(str(tmp_path), 'selection',
                               'selection.json'))
    assert osp.isfile(osp.join(str(tmp_path), 'epoch_1.pth'))


def test_dist_train_cub_two_cpu_ranks(benchmark_roots, tmp_path):
    """``tools/dist_train.sh configs/trpts/vit-b_cub.py 2`` on CPU (gloo)."""
    work = str(tmp_path / 'work')
    options = tiny_smoke_options('FGVC', benchmark_roots, work)
    del options['work_dir']  # given with --work-dir
    cfg_options = [f'{k}={v}'
                   for k, v in dict(options, **TINY_TRPTS).items()]
    proc = run_tool(['bash', DIST_TRAIN, osp.join(CONFIG_DIR, 'vit-b_cub.py'),
                     '2', '--work-dir', work, '--cfg-options', *cfg_options],
                    env_extra=dict(PORT='29531', PYTHON=PYTHON), timeout=300)
    assert_ok(proc)
    log = proc.stdout + proc.stderr
    # 4 images over 2 ranks, batch 2 per rank: one iteration per epoch.
    assert 'Epoch(train) [1][1/1]' in log
    assert 'Fisher pass' in log
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
    assert osp.isfile(osp.join(work, 'selection', 'selection.json'))


