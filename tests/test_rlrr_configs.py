"""RLRR configs: values from docs/methods/rlrr.md §4, smoke runs, the embedded
config."""
import glob
import os.path as osp

import pytest
from benchmark_data import tiny_smoke_options
from conftest import REPO, write_tiny_config
from mmengine.config import Config
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'rlrr', '*.py')))
# (lr, weight decay, branch dropout, horizontal flip, epochs): the
# reference per-task settings (docs/methods/rlrr.md §4).
EXPECTED = {
    'vit-b_cub.py': (3e-3, 5e-2, 0.1, True, 60),
    'vit-b_vtab1k-cifar100.py': (3e-3, 5e-5, 0.1, False, 110),
    'vit-b_vtab1k-camelyon.py': (3e-3, 5e-2, 0.3, True, 110),
    'vit-b_vtab1k-dsprites-loc.py': (1e-2, 5e-5, 0.1, False, 110),
}


def _types(pipeline):
    return [t['type'] for t in pipeline]


def test_one_config_per_benchmark_group():
    assert sorted(osp.basename(c) for c in CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize('config', CONFIGS, ids=osp.basename)
def test_rlrr_config_values_and_smoke_run(config, benchmark_roots, tmp_path):
    cfg = Config.fromfile(config)
    lr, wd, dropout, flip, epochs = EXPECTED[osp.basename(config)]
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.rlrr_init) == ('RLRRViT', 'reference')
    assert (backbone.branch_dropout, backbone.drop_path_rate) == (dropout, 0)
    assert cfg.model.head.init_cfg == dict(
        type='Constant', layer='Linear', val=0.)
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW',
                                                                      lr, wd)
    assert cfg.optim_wrapper.paramwise_cfg == cfg.rlrr_paramwise_cfg
    assert cfg.train_dataloader.batch_size * 8 == 32 == \
        cfg.auto_scale_lr.base_batch_size
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.randomness.seed == 42
    train = _types(cfg.train_dataloader.dataset.pipeline)
    assert ('RandomFlip' in train) == flip
    schedulers = cfg.param_scheduler
    if cfg.train_dataloader.dataset.type == 'VTAB1k':
        assert train[1] == 'Resize' and 'RandomCrop' not in train
        warmup, cosine = schedulers
        assert warmup.start_factor * lr == pytest.approx(1e-7)
        assert (cosine.begin, cosine.T_max, cosine.end) == (10, 90, 101)
        assert cosine.eta_min == 1e-8
    else:  # CUB: warm restarts every 5 epochs instead of the cosine
        assert train[1:4] == ['Resize', 'RandomCrop', 'RandomFlip']
        assert _types(cfg.test_dataloader.dataset.pipeline)[1:3] == [
            'Resize', 'CenterCrop'
        ]
        (restarts, ) = schedulers
        assert restarts.type == 'CosineRestartLR'
        assert restarts.periods == [5] * 12 and restarts.eta_min == 0

    cfg.merge_from_dict(
        tiny_smoke_options(cfg.train_dataloader.dataset.type, benchmark_roots,
                           str(tmp_path)))
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert not model.head.fc.weight.any()  # zero head, as the reference
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    assert 0 <= runner.test()['accuracy/top1'] <= 100
    assert osp.isfile(osp.join(str(tmp_path), 'epoch_1.pth'))


def test_embedded_rlrr_learns_texture(mini_vtab, tmp_path):
    """A random tiny ViT (no pretrained weights) adapted by RLRR only."""
    cfg = Config.fromfile(
        write_tiny_config(
            str(tmp_path / 'cfg.py'),
            mini_vtab,
            base='vit-tiny_rlrr_mini-vtab.py',
            max_epochs=15))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_cfg.val_interval = 15
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    backbone = runner.model.backbone
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.endswith(('scale_left', 'scale_right', 'shift', 'scale'))
        for n in trainable)
    assert backbone.rlrr_init == 'identity'
    assert backbone.layers[0].attn.qkv.scale_left.any()  # trained from 0
    # 6 classes: chance is 16.7%.
    assert runner.test()['accuracy/top1'] > 40
