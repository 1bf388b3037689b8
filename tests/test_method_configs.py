"""The benchmark configs of the related methods: GPS, RLRR, Sparse-Tuning,
SPT-LoRA and SPT-Adapter.

Every method has one config per benchmark data set (19 VTAB-1k tasks and 5
FGVC data sets); the per-task values are checked against tables typed from
docs/methods/{gps,rlrr,sparse_tuning,spt}.md, and every config trains 2
iterations on generated data (DeiT-tiny arch, ``tiny_smoke_options``) and
is tested.  Also: RLRR's warm restarts against the reference's per-epoch lr,
and Sparse-Tuning's SyncBN head."""
import glob
import os.path as osp
import warnings

import pytest
import torch
from benchmark_data import tiny_smoke_options
from conftest import REPO
from mmengine.config import Config
from mmengine.model.utils import convert_sync_batchnorm
from mmengine.optim import OptimWrapper
from mmengine.registry import PARAM_SCHEDULERS
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

from mmtrpts.apis import compute_sensitivity
from mmtrpts.datasets.fgvc_meta import FGVC_DATASETS
from mmtrpts.datasets.vtab_tasks import VTAB_TASKS

#: method -> (config dir, file-name prefix), as tools/sweep.py finds them.
METHODS = {
    'gps': ('gps', 'vit-b'),
    'rlrr': ('rlrr', 'vit-b'),
    'sparse-tuning': ('sparse-tuning', 'vit-b'),
    'spt-lora': ('spt', 'vit-b-lora'),
    'spt-adapter': ('spt', 'vit-b-adapter'),
}
#: config-name suffix -> (dataset type, data key, classes) for all 24.
DATA = {
    **{
        f'vtab1k-{t.token}': ('VTAB1k', t.folder, t.num_classes)
        for t in VTAB_TASKS.values()
    },
    **{
        name: ('FGVC', name, info.num_classes)
        for name, info in FGVC_DATASETS.items()
    },
}

# docs/methods/gps.md §3 (the GPS scripts):
# (classes, total batch, lr, K, drop-path).
GPS = {
    'cub': (200, 32, 3e-3, 2, 0.),
    'nabirds': (555, 32, 1e-4, 20, .1),
    'flowers': (102, 32, 1e-3, 1, .1),
    'dogs': (120, 64, 1e-4, 1, 0.),
    'cars': (196, 32, 5e-4, 15, 0.),
    'cifar': (100, 32, 1e-2, 1, 0.),
    'caltech101': (102, 16, 2e-3, 1, 0.),
    'dtd': (47, 16, 2e-3, 1, 0.),
    'oxford_flowers102': (102, 16, 2e-3, 1, 0.),
    'oxford_iiit_pet': (37, 32, 3e-3, 1, 0.),
    'svhn': (10, 32, 5e-3, 1, 0.),
    'sun397': (397, 16, 2.5e-3, 1, 0.),
    'patch_camelyon': (2, 32, 4e-3, 2, 0.),
    'eurosat': (10, 16, 2e-3, 1, 0.),
    'resisc45': (45, 16, 1.5e-3, 1, .1),
    'diabetic_retinopathy': (5, 32, 2e-3, 1, .2),
    'clevr_count': (8, 16, 3e-4, 1, .1),
    'clevr_dist': (6, 16, 2e-3, 1, .1),
    'dmlab': (6, 16, 1.5e-3, 1, .1),
    'kitti': (4, 16, 1e-3, 1, 0.),
    'dsprites_loc': (16, 32, 7e-3, 1, 0.),
    'dsprites_ori': (16, 16, 5e-4, 1, .2),
    'smallnorb_azi': (18, 32, 3e-3, 1, .1),
    'smallnorb_ele': (9, 32, 3e-4, 1, .2),
}
# docs/methods/rlrr.md §4 (the reference VTABConfig.py / train_fgvc.py), all
# batch 32.  VTAB-1k: (lr, weight decay, drop_path = branch_dropout, hflip).
RLRR_VTAB = {
    'cifar': (3e-3, 5e-5, .1, False),
    'caltech101': (1e-3, 5e-5, .1, False),
    'dtd': (2e-3, 5e-5, .1, True),
    'oxford_flowers102': (3e-3, 5e-2, .3, False),
    'svhn': (5e-3, 5e-5, .3, False),
    'sun397': (1e-3, 5e-5, .1, False),
    'oxford_iiit_pet': (1e-3, 5e-5, .1, True),
    'patch_camelyon': (3e-3, 5e-2, .3, True),
    'eurosat': (1e-3, 5e-5, .1, True),
    'resisc45': (3e-3, 5e-5, 0., False),
    'diabetic_retinopathy': (5e-3, 5e-5, .1, True),
    'clevr_count': (5e-3, 5e-5, .5, True),
    'clevr_dist': (1e-2, 5e-5, .2, True),
    'dmlab': (5e-3, 5e-5, .3, True),
    'kitti': (3e-3, 5e-2, .3, True),
    'dsprites_loc': (1e-2, 5e-5, .1, False),
    'dsprites_ori': (5e-3, 5e-5, .1, False),
    'smallnorb_azi': (5e-3, 5e-2, .3, False),
    'smallnorb_ele': (1e-3, 5e-5, .3, True),
}
# FGVC (weight decay 5e-2, flip): (lr, branch_dropout, warm restarts,
# drop_last).
RLRR_FGVC = {
    'cub': (3e-3, .1, True, False),
    'nabirds': (5e-4, .3, False, True),
    'flowers': (3e-3, .2, False, False),
    'cars': (3e-3, .2, False, False),
    'dogs': (1e-4, 0., True, False),
}
# docs/methods/sparse_tuning.md §3: no published recipe; every config has
# the untuned lr 1e-3 for a total batch of 64.  (lr, total batch)
SPARSE = {key: (1e-3, 64) for _, key, _ in DATA.values()}
# docs/methods/spt.md §3: one recipe for all; budget 0.4M (our choice).
# (budget, lr, weight decay, total batch)
SPT = {key: (0.4, 1e-3, 1e-4, 64) for _, key, _ in DATA.values()}


def _method_configs(method):
    folder, prefix = METHODS[method]
    return sorted(
        glob.glob(osp.join(REPO, 'configs', folder, f'{prefix}_*.py')))


CASES = [(method, config) for method in METHODS
         for config in _method_configs(method)]


def _suffix(method, config):
    return osp.basename(config)[len(METHODS[method][1]) + 1:-3]


def _types(pipeline):
    return [t['type'] for t in pipeline]


@pytest.mark.parametrize('method', METHODS)
def test_24_configs_per_method(method):
    folder, prefix = METHODS[method]
    names = [osp.basename(c) for c in _method_configs(method)]
    assert sorted(names) == sorted(f'{prefix}_{s}.py' for s in DATA)
    assert len(names) == 24
    # nothing else in the folder
    others = {p for m, (f, p) in METHODS.items() if f == folder}
    assert all(
        osp.basename(c).split('_')[0] in others
        for c in glob.glob(osp.join(REPO, 'configs', folder, '*.py')))


def test_the_tables_cover_every_data_set():
    keys = sorted(key for _, key, _ in DATA.values())
    assert sorted(GPS) == sorted(SPARSE) == sorted(SPT) == keys
    assert sorted(RLRR_VTAB) == sorted(VTAB_TASKS)
    assert sorted(RLRR_FGVC) == sorted(FGVC_DATASETS)


def _check_gps(cfg, key):
    classes, total, lr, k, drop_path = GPS[key]
    assert cfg.model.head.num_classes == classes
    hook = cfg.custom_hooks[0]
    assert (hook.type, hook.rule, hook.k) == ('FisherSelectionHook', 'gps', k)
    assert 'token_placement' not in hook
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.drop_path_rate) == ('VisionTransformer',
                                                        drop_path)
    assert cfg.optim_wrapper.optimizer.lr == lr
    assert cfg.param_scheduler[0].start_factor * lr == pytest.approx(1e-7)
    assert cfg.train_dataloader.batch_size * 8 == total == \
        cfg.auto_scale_lr.base_batch_size
    assert cfg.train_cfg.max_epochs == 100


def _check_rlrr(cfg, key):
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.rlrr_init) == ('RLRRViT', 'reference')
    assert cfg.model.head.init_cfg == dict(
        type='Constant', layer='Linear', val=0.)
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.paramwise_cfg == cfg.rlrr_paramwise_cfg
    assert cfg.train_dataloader.batch_size * 8 == 32 == \
        cfg.auto_scale_lr.base_batch_size
    assert cfg.randomness.seed == 42
    train = _types(cfg.train_dataloader.dataset.pipeline)
    schedulers = cfg.param_scheduler
    if key in RLRR_VTAB:
        lr, wd, dropout, flip = RLRR_VTAB[key]
        restarts, drop_last, epochs = False, False, 110
        cosine_steps = (10, 90, 101)  # the step into 100 lands on 1e-8
        assert train[1] == 'Resize' and 'RandomCrop' not in train
        assert ('RandomFlip' in train) == flip
    else:
        lr, dropout, restarts, drop_last = RLRR_FGVC[key]
        wd, epochs = 5e-2, 60
        cosine_steps = (10, 40, 51)
        assert train[1:4] == ['Resize', 'RandomCrop', 'RandomFlip']
        assert _types(cfg.test_dataloader.dataset.pipeline)[1:3] == [
            'Resize', 'CenterCrop'
        ]
    assert (backbone.branch_dropout, backbone.drop_path_rate) == (dropout, 0)
    assert (optimizer.lr, optimizer.weight_decay) == (lr, wd)
    assert cfg.train_cfg.max_epochs == epochs
    assert bool(cfg.train_dataloader.get('drop_last')) == drop_last
    if restarts:  # the per-epoch values: test_rlrr_warm_restarts_...
        (scheduler, ) = schedulers
        assert scheduler.type == 'CosineRestartLR'
    else:
        warmup, cosine = schedulers
        assert warmup.start_factor * lr == pytest.approx(1e-7)
        assert (warmup.begin, warmup.end) == (0, 10)
        assert (cosine.begin, cosine.T_max, cosine.end) == cosine_steps
        assert cosine.eta_min == 1e-8


def _check_sparse_tuning(cfg, key):
    lr, total = SPARSE[key]
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.keep_rate, backbone.keep_layers,
            backbone.keep_round, backbone.fuse,
            backbone.dense) == ('SparseTuningViT', 0.7, (3, 6, 9), 'ceil',
                                'sum', 'stage_sum')
    assert (cfg.model.head.type, cfg.model.head.with_bn) == ('BNLinearClsHead',
                                                             True)
    assert cfg.sync_bn == 'torch'  # the BN head over the total batch
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW',
                                                                      lr, 0)
    assert cfg.train_cfg.max_epochs == 100
    assert cfg.param_scheduler[0].end == 10  # warm-up epochs
    assert cfg.train_dataloader.batch_size * 8 == total == \
        cfg.auto_scale_lr.base_batch_size
    assert cfg.train_dataloader.drop_last
    assert ('augments' in cfg.model.get('train_cfg', {})) == (
        cfg.train_dataloader.dataset.type == 'FGVC')


def _check_spt(cfg, key, structured_type, token):
    budget, lr, wd, total = SPT[key]
    backbone = cfg.model.backbone
    assert backbone.type == 'SPTViT'
    assert backbone.structured_type == structured_type and backbone.rank == 8
    assert backbone.sensitivity_file == \
        f'data/sensitivity/spt-{structured_type}_{token}_{budget}M.pth'
    assert cfg.sensitivity_cfg.budget == budget
    assert cfg.optim_wrapper.optimizer == dict(
        type='AdamW', lr=lr, weight_decay=wd)
    assert cfg.train_dataloader.batch_size * 8 == total == \
        cfg.auto_scale_lr.base_batch_size
    assert cfg.data_preprocessor.mean == [123.675, 116.28, 103.53]
    assert cfg.param_scheduler[0].start_factor * lr == pytest.approx(1e-6)
    assert cfg.param_scheduler[1].eta_min == 1e-5
    assert cfg.train_cfg.max_epochs == 100


@pytest.fixture(scope='module')
def spt_allocations(benchmark_roots, tmp_path_factory):
    """One tiny allocation per (module type, benchmark), computed from a
    real config: the smoke runs share them (the allocation depends on the
    architecture and module type, not on the task)."""
    files = {}
    for structured_type in ('lora', 'adapter'):
        for suffix in ('vtab1k-cifar100', 'cub'):
            cfg = Config.fromfile(
                osp.join(REPO, 'configs', 'spt',
                         f'vit-b-{structured_type}_{suffix}.py'))
            dataset_type = cfg.train_dataloader.dataset.type
            work_dir = tmp_path_factory.mktemp('spt')
            cfg.merge_from_dict(
                tiny_smoke_options(dataset_type, benchmark_roots,
                                   str(work_dir)))
            cfg.log_level = 'WARNING'
            out = str(work_dir / 'allocation.pth')
            allocation = compute_sensitivity(
                cfg, out=out, max_batches=1, batch_size=4, progress=False)
            assert allocation['settings']['structured_type'] == \
                structured_type
            assert allocation['structured']
            files[structured_type, dataset_type] = out
    return files


@pytest.mark.parametrize(
    'method, config',
    CASES,
    ids=[f'{m}/{osp.basename(c)[:-3]}' for m, c in CASES])
def test_config_values_and_smoke_run(method, config, benchmark_roots, tmp_path,
                                     request):
    cfg = Config.fromfile(config)
    suffix = _suffix(method, config)
    dataset_type, key, num_classes = DATA[suffix]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[loader].dataset
        assert dataset.type == dataset_type
        assert dataset['task' if dataset_type == 'VTAB1k' else 'dataset'] \
            == key
    assert cfg.model.head.num_classes == cfg.data_preprocessor.num_classes \
        == num_classes
    if method == 'gps':
        _check_gps(cfg, key)
    elif method == 'rlrr':
        _check_rlrr(cfg, key)
    elif method == 'sparse-tuning':
        _check_sparse_tuning(cfg, key)
    else:
        structured_type = method.split('-')[1]
        _check_spt(cfg, key, structured_type, suffix.replace('vtab1k-', ''))

    # The val loop evaluates the test split with the test evaluator: the
    # smoke run's evaluation covers what runner.test() would run again.
    assert cfg.test_dataloader == cfg.val_dataloader
    assert cfg.test_evaluator == cfg.val_evaluator
    cfg.merge_from_dict(
        tiny_smoke_options(dataset_type, benchmark_roots, str(tmp_path)))
    if method == 'gps':  # the density plot: test_trpts_runner.py
        cfg.custom_hooks[0].save_plot = False
    # No 66 MB checkpoint per run: saving is the shared runtime's
    # (test_atomic_checkpoint.py; the methods' own state: test_demo.py).
    cfg.default_hooks.checkpoint = None
    if method.startswith('spt'):
        allocations = request.getfixturevalue('spt_allocations')
        cfg.model.backbone.sensitivity_file = allocations[structured_type,
                                                          dataset_type]
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2  # 4 images, batch 2, one epoch
    top1 = runner.message_hub.get_scalar('val/accuracy/top1')
    assert len(top1.data[0]) == 1  # one evaluation, after the epoch
    assert 0 <= top1.current() <= 100
    if method == 'gps':
        assert osp.isfile(
            osp.join(str(tmp_path), 'selection', 'selection.json'))
    elif method == 'sparse-tuning':
        trainable = {
            n
            for n, p in runner.model.named_parameters() if p.requires_grad
        }
        assert trainable and all(
            n.startswith(('backbone.adapters.', 'head.')) for n in trainable)
        # one process: the plain BatchNorm (SyncBN only under DDP)
        assert type(runner.model.head.bn) is torch.nn.BatchNorm1d


# -- RLRR: warm restarts on CUB and Stanford Dogs ----------------------------
def _reference_warm_restart_lrs(lr, epochs):
    """The lr each epoch trains with in RLRR's train_fgvc.py (CUB, Stanford
    Dogs): timm's create_scheduler sets `initial_lr` = lr, then
    CosineAnnealingWarmRestarts(T_0=5, T_mult=1, eta_min=0) is built (its
    own first step sets lr) and, after training epoch `epoch`, the loop
    calls `lr_scheduler.step(epoch)`."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=5, T_mult=1, eta_min=0, last_epoch=-1)
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]['lr'])  # train(...)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            scheduler.step(epoch)
    return lrs


def _mmengine_lrs(cfg):
    """The lr of each epoch under the config's schedulers, stepped as
    MMEngine's ParamSchedulerHook steps by-epoch schedulers (once after
    every training epoch)."""
    param = torch.nn.Parameter(torch.zeros(1))
    wrapper = OptimWrapper(
        torch.optim.AdamW([param], lr=cfg.optim_wrapper.optimizer.lr))
    schedulers = []
    for scheduler in cfg.param_scheduler:
        assert scheduler.by_epoch
        assert not scheduler.get('convert_to_iter_based')
        schedulers.append(
            PARAM_SCHEDULERS.build(dict(scheduler, optimizer=wrapper)))
    lrs = []
    for _ in range(cfg.train_cfg.max_epochs):
        lrs.append(wrapper.param_groups[0]['lr'])
        with warnings.catch_warnings():  # no optimizer.step() here
            warnings.simplefilter('ignore')
            for scheduler in schedulers:
                scheduler.step()
    return lrs


@pytest.mark.parametrize('name', ['vit-b_cub.py', 'vit-b_dogs.py'])
def test_rlrr_warm_restarts_match_the_reference_per_epoch(name):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'rlrr', name))
    lr = cfg.optim_wrapper.optimizer.lr
    reference = _reference_warm_restart_lrs(lr, 60)
    # epochs 0 and 1 at the peak, restarts at 1, 6, 11, ...
    assert [round(x / lr, 4) for x in reference[:8]
            ] == [1, 1, .9045, .6545, .3455, .0955, 1, .9045]
    assert cfg.train_cfg.max_epochs == 60
    assert _mmengine_lrs(cfg) == pytest.approx(reference, rel=1e-9, abs=0)


def test_rlrr_head_starts_at_zero(benchmark_roots, tmp_path):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'rlrr', 'vit-b_cub.py'))
    cfg.merge_from_dict(
        tiny_smoke_options('FGVC', benchmark_roots, str(tmp_path)))
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert not model.head.fc.weight.any()  # zero head, as the reference


# -- Sparse-Tuning: the BatchNorm head under DDP -------------------------------
def test_sparse_tuning_head_becomes_syncbn_under_ddp(benchmark_roots,
                                                     tmp_path):
    """What MMEngine's Runner.wrap_model does with `sync_bn` in a
    distributed run, on the built model: the head's non-affine BatchNorm
    becomes a SyncBatchNorm with the same settings; without a process group
    it normalises like the BatchNorm."""
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'sparse-tuning', 'vit-b_vtab1k-cifar100.py'))
    cfg.merge_from_dict(
        tiny_smoke_options('VTAB1k', benchmark_roots, str(tmp_path)))
    head = MODELS.build(cfg.model.head)
    assert type(head.bn) is torch.nn.BatchNorm1d
    head = convert_sync_batchnorm(head, cfg.sync_bn)
    synced = head.bn
    assert type(synced) is torch.nn.SyncBatchNorm
    assert (synced.eps, synced.affine, synced.track_running_stats,
            synced.momentum) == (1e-6, False, True, 0.1)
    assert not list(synced.parameters())
    reference = torch.nn.BatchNorm1d(192, eps=1e-6, affine=False)
    feats = torch.randn(8, 192)
    synced.train()
    assert torch.allclose(synced(feats), reference(feats))
    assert torch.allclose(synced.running_var, reference.running_var)
