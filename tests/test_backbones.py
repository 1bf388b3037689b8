"""Backbones beyond ViT-B: Swin-B / ConvNeXt-B parameter selection, clear
errors for token selection without [CLS] attention, and the ViT variants
MMPretrain builds (DINOv2, CLIP, EVA-02); docs/methods/trpts.md §12.

The real-size tests build Swin-B and ConvNeXt-B from every
``configs/trpts/{swin-b,convnext-b}_*.py`` (no weights loaded) and check the
eligible tensors and the budget against a census computed here from the
architectures' definitions; the smoke runs shrink the configs to tiny
custom archs and train 2 iterations on generated data.
"""
import glob
import math
import os.path as osp
import warnings
from types import SimpleNamespace
from typing import Dict

import pytest
import torch
from benchmark_data import tiny_smoke_options
from conftest import REPO, write_tiny_config
from mmengine.config import Config
from mmengine.runner import Runner
from mmpretrain.models import VisionTransformer
from mmpretrain.registry import MODELS

from mmtrpts.checkpoints import make_delta
from mmtrpts.checkpoints.merge import merge_checkpoint
from mmtrpts.engine.hooks.fisher_selection_hook import (HOOK_ARGS,
                                                        FisherSelectionHook)
from mmtrpts.engine.parameter_selection import (ParameterSelection,
                                                check_block_granularity)
from mmtrpts.models import TokenKeepFuseViT
from mmtrpts.models.utils.sparse_values import SparseValueMixin
from mmtrpts.selection.eligibility import FROZEN, FULL, MASKED, assign_roles

CONFIG_DIR = osp.join(REPO, 'configs', 'trpts')
BACKBONES = ('swin-b', 'convnext-b')
CONFIGS = {
    key: sorted(glob.glob(osp.join(CONFIG_DIR, f'{key}_*.py')))
    for key in BACKBONES
}
ALL_CONFIGS = CONFIGS['swin-b'] + CONFIGS['convnext-b']
#: Configs whose ViT-B budget Swin-B / ConvNeXt-B cannot reach (their
#: 1024-dim heads are larger than ViT-B's); each names it in its header.
UNREACHABLE = ('vtab1k-cifar100', 'vtab1k-caltech101', 'vtab1k-flowers102',
               'vtab1k-sun397', 'nabirds')
#: Real-size selections (about 3 s each): one VTAB-1k task and one FGVC
#: data set per backbone.
SELECTED = ('vtab1k-dtd', 'cub')
#: One smoke run per backbone and benchmark.
SMOKE = ('cub', 'vtab1k-dtd')
HEAD_DIMS = 1024  # both backbones' last stage


def _task(config: str) -> str:
    return osp.basename(config)[:-3].split('_', 1)[1]


def _key(config: str) -> str:
    return osp.basename(config).split('_', 1)[0]


# -- the architectures' census, from their definitions ------------------------
def swin_b_census() -> dict:
    """Swin-B (MMPretrain arch 'base', window 7, patch 4), by definition.

    Returns:
        dict: ``mats`` [(rows, cols)] of the masked weights, ``full``
        (biases) and ``frozen`` (LayerNorms and relative position bias
        tables) entry counts.
    """
    embed, depths, heads, window, patch = 128, (2, 2, 18, 2), (4, 8, 16,
                                                               32), 7, 4
    mats = [(embed, 3 * patch * patch)]  # patch embedding conv
    full, frozen = embed, 2 * embed  # its bias; its LayerNorm
    for stage, (depth, num_heads) in enumerate(zip(depths, heads)):
        d = embed * 2**stage
        for _ in range(depth):
            # window-attention qkv and proj, MLP fc1 and fc2
            mats += [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)]
            full += 3 * d + d + 4 * d + d
            frozen += 2 * 2 * d + (2 * window - 1)**2 * num_heads
        if stage < len(depths) - 1:  # patch merging: norm + reduction
            mats.append((2 * d, 4 * d))
            frozen += 2 * 4 * d
    frozen += 2 * embed * 8  # the final norm3
    return dict(mats=mats, full=full, frozen=frozen)


def convnext_b_census() -> dict:
    """ConvNeXt-B v1 (MMPretrain arch 'base'), by definition.

    Returns:
        dict: As :func:`swin_b_census`; ``full`` holds the biases and the
        layer scales, ``frozen`` the LayerNorms.
    """
    channels, depths = (128, 256, 512, 1024), (3, 3, 27, 3)
    mats = [(channels[0], 3 * 4 * 4)]  # stem conv
    full, frozen = channels[0], 2 * channels[0]  # its bias; stem LN
    for stage, (depth, c) in enumerate(zip(depths, channels)):
        if stage:  # LN + 2x2 stride-2 conv
            frozen += 2 * channels[stage - 1]
            mats.append((c, channels[stage - 1] * 2 * 2))
            full += c
        for _ in range(depth):
            # depthwise 7x7, pointwise 1 and 2 (Linear)
            mats += [(c, 7 * 7), (4 * c, c), (c, 4 * c)]
            full += c + 4 * c + c + c  # three biases, gamma
            frozen += 2 * c  # LN
    frozen += 2 * channels[-1]  # norm3
    return dict(mats=mats, full=full, frozen=frozen)


CENSUS = {'swin-b': swin_b_census(), 'convnext-b': convnext_b_census()}


def budget_rule(census: dict, head: int, ratio: float) -> dict:
    """The budget of docs/methods/trpts.md §4 on ``census``, by hand.

    Returns:
        dict: ``denominator``, ``target`` (masked entries), ``reachable``
        and, with all-equal Fisher scores (every matrix's top-set density is
        1, so every C_l is the one calibrated C_min: the uniform C whose
        count is closest to the target, ties to the lower C), ``trainable``
        and ``per_row`` (C).
    """
    mats = census['mats']
    denominator = sum(r * c for r, c in mats) + census['full'] + \
        census['frozen']
    dense = census['full'] + head
    target = math.floor(ratio * denominator - dense + 0.5)
    low, high = sum(r for r, _ in mats), sum(r * c for r, c in mats)
    out = dict(
        denominator=denominator,
        target=target,
        low=low,
        reachable=0 < target and low <= target <= high)
    if out['reachable']:
        counts = {}
        c = 1
        while True:
            counts[c] = sum(r * min(c, cols) for r, cols in mats)
            if counts[c] >= target or counts[c] == high:
                break
            c += 1
        best = min(counts, key=lambda k: (abs(counts[k] - target), k))
        out.update(per_row=best, trainable=counts[best] + dense)
    return out


def _hook_selection(cfg) -> ParameterSelection:
    """The config's FisherSelectionHook settings as the selection object."""
    hook = dict(cfg.custom_hooks[0])
    assert hook.pop('type') == 'FisherSelectionHook'
    assert 'token_placement' not in hook  # parameter selection only
    return ParameterSelection(**{
        k: v
        for k, v in hook.items() if k not in HOOK_ARGS
    })


def _real_model(config: str):
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None  # nothing is loaded
    return cfg, MODELS.build(cfg.model)


_SHARED = {}
_RATES = ('drop_path_rate', 'drop_rate')  # no effect on the parameters


def _shared_real_model(config: str):
    """The config's model at full size, its backbone built once per
    backbone (0.8 s each): the configs of one backbone differ in their
    backbones only by drop rates (asserted), and each gets its own head."""
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    backbone = {k: v for k, v in cfg.model.backbone.items() if k not in _RATES}
    key = _key(config)
    if key not in _SHARED:
        _SHARED[key] = (backbone, MODELS.build(cfg.model))
    first, model = _SHARED[key]
    assert backbone == first, config
    model.head = MODELS.build(cfg.model.head)
    return cfg, model


# -- 1. real size -------------------------------------------------------------
@pytest.mark.parametrize('config', ALL_CONFIGS, ids=osp.basename)
def test_real_size_eligibility_and_budget(config):
    """Every config: the eligible / full / frozen sets and the budget of the
    real Swin-B / ConvNeXt-B equal the architecture's census; the budgets
    the ViT-B values cannot reach fail with the budget error."""
    key, task = _key(config), _task(config)
    cfg, model = _shared_real_model(config)
    census = CENSUS[key]
    roles = assign_roles(model, cfg.optim_wrapper.get('eligibility'))
    named = dict(model.named_parameters())
    masked = sorted((tuple(named[n].shape[:1]) + (named[n][0].numel(), ))
                    for n, r in roles.items() if r == MASKED)
    assert masked == sorted(census['mats'])
    backbone = {n: p for n, p in named.items() if n.startswith('backbone.')}
    by_role = {
        role: sum(p.numel() for n, p in backbone.items() if roles[n] == role)
        for role in (MASKED, FULL, FROZEN)
    }
    assert by_role[FULL] == census['full']
    assert by_role[FROZEN] == census['frozen']
    classes = cfg.model.head.num_classes
    head = classes * HEAD_DIMS + classes
    assert sum(p.numel() for n, p in named.items()
               if n.startswith('head.') and roles[n] == FULL) == head
    hook = cfg.custom_hooks[0]
    rule = budget_rule(census, head, hook.target_ratio)
    assert rule['denominator'] == sum(p.numel() for p in backbone.values())
    assert rule['reachable'] == (task not in UNREACHABLE)
    if task in UNREACHABLE:
        # Fails before any Fisher pass; the scores are not even looked at.
        scores = {
            n: torch.ones(()).expand(named[n].shape)
            for n, r in roles.items() if r == MASKED
        }
        with pytest.raises(ValueError, match='unreachable|leaves no masked'):
            _hook_selection(cfg).selector.select(scores, named, roles)


@pytest.mark.parametrize(
    'config', [c for c in ALL_CONFIGS if _task(c) in SELECTED],
    ids=osp.basename)
def test_real_size_selection_exact_trainable_count(config):
    """The selection at the config's budget trains exactly the count of
    the budget rule (all-equal scores make it computable by hand)."""
    cfg, model = _real_model(config)
    roles = assign_roles(model, cfg.optim_wrapper.get('eligibility'))
    named = dict(model.named_parameters())
    scores = {
        n: torch.ones_like(p, requires_grad=False)
        for n, p in named.items() if roles[n] == MASKED
    }
    classes = cfg.model.head.num_classes
    rule = budget_rule(CENSUS[_key(config)], classes * HEAD_DIMS + classes,
                       cfg.custom_hooks[0].target_ratio)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # uniform C misses the tolerance
        record = _hook_selection(cfg).selector.select(scores, named, roles)
    assert record['budget']['trainable'] == rule['trainable']
    assert record['budget']['denominator'] == rule['denominator']
    for name, index in record['indices'].items():
        rows, cols = named[name].shape[0], named[name][0].numel()
        assert index.numel() == rows * min(rule['per_row'], cols), name
    print(f'{osp.basename(config)}: {rule["trainable"]:,} trainable '
          f'({rule["per_row"]} per row) of {rule["denominator"]:,}')


# -- 1b. tiny smoke -----------------------------------------------------------
#: Tiny custom archs keeping each backbone's structure (4 stages, window
#: attention and patch merging; depthwise + pointwise blocks with layer
#: scale), 16 px patches so 224 px inputs stay cheap.
SWIN_TINY = dict(
    _delete_=True, embed_dims=8, depths=[1] * 4, num_heads=[1] * 4)
CONVNEXT_TINY = dict(_delete_=True, depths=[1] * 4, channels=[8, 16, 32, 64])
TINY = {
    'swin-b': {
        'model.backbone.arch': SWIN_TINY,
        'model.backbone.patch_size': 16,
        'model.backbone.window_size': 2,
        'model.head.in_channels': 64,
    },
    'convnext-b': {
        'model.backbone.arch': CONVNEXT_TINY,
        'model.backbone.stem_patch_size': 16,
        'model.head.in_channels': 64,
    },
}
#: The ViT-B budgets are below what tiny biases and heads take.
TINY_HOOK = {
    'custom_hooks.0.target_ratio': None,
    'custom_hooks.0.m_percent': 5.0,
    'custom_hooks.0.batch_size': 4,
    'custom_hooks.0.progress': False,
}


def tiny_options(config: str, roots: Dict[str, str], work_dir: str,
                 dataset_type: str) -> dict:
    """benchmark_data's tiny overrides with this backbone's tiny arch."""
    options = tiny_smoke_options(dataset_type, roots, work_dir)
    for vit_only in ('model.backbone.arch', 'model.backbone.patch_size',
                     'model.head.in_channels'):
        options.pop(vit_only)
    options.update(TINY[_key(config)])
    options.update(TINY_HOOK)
    return options


@pytest.mark.parametrize('config', ALL_CONFIGS, ids=osp.basename)
def test_tiny_config_parses_and_builds(config, benchmark_roots, tmp_path):
    cfg = Config.fromfile(config)
    key = _key(config)
    assert cfg.model.backbone.type == {
        'swin-b': 'SwinTransformer',
        'convnext-b': 'ConvNeXt'
    }[key]
    assert cfg.model.backbone.init_cfg.checkpoint == cfg.pretrained
    assert cfg.data_preprocessor.mean == [123.675, 116.28, 103.53]
    vit = Config.fromfile(osp.join(CONFIG_DIR, f'vit-b_{_task(config)}.py'))
    # The per-task values are the ViT-B config's.
    assert cfg.train_dataloader.batch_size == vit.train_dataloader.batch_size
    assert cfg.optim_wrapper.optimizer.lr == vit.optim_wrapper.optimizer.lr
    assert cfg.model.backbone.drop_path_rate == \
        vit.model.backbone.drop_path_rate
    assert cfg.custom_hooks[0].target_ratio == \
        vit.custom_hooks[0].target_ratio
    assert cfg.auto_scale_lr == vit.auto_scale_lr
    assert cfg.model.head.num_classes == vit.model.head.num_classes
    assert cfg.train_dataloader.dataset == vit.train_dataloader.dataset
    assert 'token_placement' not in cfg.custom_hooks[0]
    cfg.merge_from_dict(
        tiny_options(config, benchmark_roots, str(tmp_path),
                     cfg.train_dataloader.dataset.type))
    model = MODELS.build(cfg.model)
    assert model.head.fc.out_features == cfg.model.head.num_classes
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224), mode='tensor')
    assert logits.shape == (1, cfg.model.head.num_classes)


def _tiny_base(config: str, path: str) -> Dict[str, torch.Tensor]:
    """A seeded 'pretrained' tiny backbone, saved as a checkpoint."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({
        k: v
        for k, v in TINY[_key(config)].items()
        if k.startswith('model.backbone.')
    })
    torch.manual_seed(0)
    backbone = MODELS.build(dict(cfg.model.backbone, init_cfg=None))
    backbone.init_weights()
    with torch.no_grad():  # make the layer scales count
        for name, param in backbone.named_parameters():
            if name.endswith('gamma'):
                param.uniform_(0.5, 1.5)
    base = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    torch.save(dict(meta={}, state_dict=base), path)
    return base


@pytest.mark.parametrize(
    'config', [c for c in ALL_CONFIGS if _task(c) in SMOKE], ids=osp.basename)
def test_tiny_smoke_run_selection_and_delta(config, benchmark_roots, tmp_path):
    """2 iterations from a 'pretrained' tiny backbone; only selected
    entries and the full tensors move (the delta export checks every other
    tensor against the base), and the delta merges back exactly."""
    cfg = Config.fromfile(config)
    base = _tiny_base(config, str(tmp_path / 'base.pth'))
    options = tiny_options(config, benchmark_roots, str(tmp_path / 'work'),
                           cfg.train_dataloader.dataset.type)
    options['model.backbone.init_cfg'] = dict(
        type='Pretrained',
        checkpoint=str(tmp_path / 'base.pth'),
        prefix='backbone.')
    cfg.merge_from_dict(options)
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2  # 4 images, batch 2, one epoch
    assert 0 <= runner.test()['accuracy/top1'] <= 100
    assert osp.isfile(
        osp.join(str(tmp_path / 'work'), 'selection', 'selection.json'))
    selection = runner.optim_wrapper.selection
    assert selection['block_densities'] is None  # no ViT blocks
    assert 'token_blocks' not in selection
    model = runner.model
    model.eval()
    trained = model.state_dict()  # dense keys, also in sparse-value form
    # The training form (docs/methods/trpts.md §12.2-12.3): Linear layers
    # and patch convolutions take sparse values, other convs the masked path.
    sparse = {
        n
        for n, m in model.named_modules() if isinstance(m, SparseValueMixin)
    }
    if _key(config) == 'swin-b':
        tables = [n for n in trained if n.endswith('bias_table')]
        assert tables and not set(tables) & set(selection['full'])
        reductions = [
            n for n in selection['indices']
            if n.endswith('downsample.reduction.weight')
        ]
        assert len(reductions) == 3
        assert {
            'backbone.patch_embed.projection',
            'backbone.stages.0.downsample.reduction',
            'backbone.stages.3.blocks.0.attn.w_msa.qkv',
            'backbone.stages.3.blocks.0.ffn.layers.1'
        } <= sparse
    else:
        gammas = [n for n in trained if n.endswith('.gamma')]
        assert gammas and set(gammas) <= set(selection['full'])
        depthwise = [
            n for n in selection['indices']
            if n.endswith('depthwise_conv.weight')
        ]
        assert len(depthwise) == 4 and all(selection['indices'][n].numel()
                                           for n in depthwise)
        assert {
            'backbone.downsample_layers.0.0', 'backbone.downsample_layers.3.1',
            'backbone.stages.0.0.pointwise_conv1'
        } <= sparse
        assert not any(n.endswith('depthwise_conv') for n in sparse)
    # Raises if anything outside the selection changed.
    delta = make_delta(trained, selection, base_state_dict=base)
    # What tools/model_converters/merge.py delta does.
    merged = merge_checkpoint(
        'delta',
        delta,
        'delta.pth',
        base=dict(state_dict=base),
        base_source='base.pth')['state_dict']
    assert sorted(merged) == sorted(trained)
    for name, value in trained.items():
        assert torch.equal(merged[name], value), name
    plain = MODELS.build(
        dict(cfg.model, backbone=dict(cfg.model.backbone, init_cfg=None)))
    plain.eval()
    plain.load_state_dict(merged, strict=True)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(
            plain(images, mode='tensor'), model(images, mode='tensor'))


@pytest.mark.parametrize('key', BACKBONES)
@pytest.mark.parametrize('method', ['rlrr', 'spt'])
def test_rlrr_and_spt_merges_refuse_these_backbones(key, method):
    """RLRR and SPT exist for ViT only; their merges name the file."""
    config = osp.join(CONFIG_DIR, f'{key}_cub.py')
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({
        k: v
        for k, v in TINY[key].items() if k.startswith('model.')
    })
    cfg.model.backbone.init_cfg = None
    state = MODELS.build(cfg.model).state_dict()
    with pytest.raises(ValueError, match=r'^run\.pth'):
        merge_checkpoint(method, dict(meta={}, state_dict=state), 'run.pth')


# -- 2. token selection needs [CLS] attention ---------------------------------
TINY_VIT = dict(
    arch=dict(
        embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
    img_size=32,
    patch_size=4)
TINY_BACKBONES = {
    'SwinTransformer':
    dict(
        type='SwinTransformer',
        arch=dict(embed_dims=8, depths=[1, 1], num_heads=[1, 1]),
        img_size=32,
        window_size=2,
        out_indices=(1, )),
    'ConvNeXt':
    dict(type='ConvNeXt', arch=dict(depths=[1, 1], channels=[8, 16])),
    'ViTEVA02':
    dict(type='ViTEVA02', **TINY_VIT, sub_ln=True),
    'VisionTransformer':
    dict(type='VisionTransformer', **TINY_VIT),
    'ResNet':
    dict(type='ResNet', depth=18),
}


def _classifier(backbone: dict):
    return SimpleNamespace(backbone=MODELS.build(backbone))


@pytest.mark.parametrize('name', list(TINY_BACKBONES))
def test_token_placement_on_a_backbone_without_token_selection(name):
    hook = FisherSelectionHook(
        token_placement=dict(mode='sparse', num_blocks=1))
    model = _classifier(TINY_BACKBONES[name])
    runner = SimpleNamespace(model=model, optim_wrapper=None)
    with pytest.raises(
            ValueError, match=rf'backbone is {name}: .*Remove '
            'token_placement'):
        hook.before_run(runner)
    with pytest.raises(ValueError, match=f'backbone is {name}'):
        hook.place_tokens(model, dict(layers={}))
    # Without token_placement the hook has nothing to refuse here.
    FisherSelectionHook().before_run(runner)


@pytest.mark.parametrize(
    'options,match', [
        (dict(with_cls_token=False,
              out_type='avg_featmap'), 'with_cls_token=False'),
        (dict(with_cls_token=False, out_type='raw'), 'with_cls_token=False'),
        (dict(out_type='featmap'), "out_type='featmap'"),
    ],
    ids=['no-cls-avg', 'no-cls-raw', 'featmap'])
def test_token_keep_fuse_vit_without_cls_attention(options, match):
    """Every way of turning token selection on fails with the option."""
    with pytest.raises(ValueError, match=rf'keep_layers=\[1\]: .*{match}'):
        TokenKeepFuseViT(**TINY_VIT, **options, keep_layers=(1, ))
    model = TokenKeepFuseViT(**TINY_VIT, **options)  # no selection: fine
    images = torch.randn(1, 3, 32, 32)
    assert model(images)[0].shape[0] == 1
    with pytest.raises(ValueError, match=match):
        model.set_keep_layers([1])
    hook = FisherSelectionHook(
        token_placement=dict(mode='sparse', num_blocks=1))
    runner = SimpleNamespace(
        model=SimpleNamespace(backbone=model), optim_wrapper=None)
    with pytest.raises(
            ValueError, match=rf'token_placement=\.\.\.\): .*{match}'):
        hook.before_run(runner)
    with pytest.raises(
            ValueError, match=f'forward_with_cls_attention: '
            f'.*{match}'):
        model.forward_with_cls_attention(images)
    state = model.state_dict()
    state['keep_layer_mask'] = torch.tensor([False, True])
    with pytest.raises(ValueError, match=rf'loaded keep_layer_mask .*{match}'):
        model.load_state_dict(state)
    model.keep_layer_mask.fill_(True)  # written directly
    with pytest.raises(ValueError, match=rf'forward with .*{match}'):
        model(images)


def test_hook_refuses_token_placement_before_the_fisher_pass(
        benchmark_roots, tmp_path):
    """A Swin config with token_placement stops in before_run."""
    config = osp.join(CONFIG_DIR, 'swin-b_vtab1k-dtd.py')
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(
        tiny_options(config, benchmark_roots, str(tmp_path), 'VTAB1k'))
    cfg.custom_hooks[0].token_placement = dict(mode='sparse', num_blocks=3)
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    with pytest.raises(
            ValueError,
            match='backbone is SwinTransformer: it '
            r'has no \[CLS\] token'):
        runner.train()
    assert not osp.exists(osp.join(str(tmp_path), 'selection'))


def test_block_granularity_needs_vit_blocks():
    swin = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=TINY_BACKBONES['SwinTransformer'],
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=3, in_channels=16)))
    roles = assign_roles(swin)
    selection = ParameterSelection(
        granularity='block', m_percent=5., progress=False)
    with pytest.raises(
            ValueError, match="SwinTransformer do not follow .*"
            r'ffn\.layers'):
        selection.run_on_loader(swin, [], roles)  # before any batch
    with pytest.raises(ValueError, match='ConvNeXt do not follow'):
        check_block_granularity(['backbone.stages.0.0.pointwise_conv1.weight'],
                                'ConvNeXt')
    check_block_granularity([
        'backbone.patch_embed.projection.weight',
        'backbone.layers.0.attn.qkv.weight',
        'backbone.layers.11.ffn.layers.1.weight'
    ])


# -- 3. ViT variants MMPretrain builds ----------------------------------------
#: Tiny dims, the variants' structural options (mmpretrain configs/dinov2,
#: configs/clip, configs/eva02).
VARIANTS = {
    # vit-base-p14_dinov2-pre_headless.py: patch 14, layer scale 1e-5
    'dinov2':
    dict(TINY_VIT, img_size=56, patch_size=14, layer_scale_init_value=1e-5),
    # clip_vit-base-p16_zeroshot-cls_in1k.py: pre_norm (no patch-embed
    # bias), QuickGELU
    'clip':
    dict(
        TINY_VIT,
        img_size=64,
        patch_size=16,
        pre_norm=True,
        layer_cfgs=dict(act_cfg=dict(type='QuickGELU'))),
}
#: eva02-base-p14_in1k.py: a separate class (RoPE, SwiGLU, sub-LN).
EVA02 = dict(
    type='ViTEVA02',
    arch=dict(TINY_VIT['arch'], feedforward_channels=int(32 * 4 * 2 / 3)),
    img_size=56,
    patch_size=14,
    sub_ln=True,
    final_norm=False,
    out_type='avg_featmap')


def _randomised_vit(options: dict) -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(**options)
    with torch.no_grad():  # non-trivial layer scales, tokens, positions
        for param in vit.parameters():
            param.normal_(0, 0.5 if param.dim() == 1 else 0.1)
    vit.eval()  # (VisionTransformer.train returns None)
    return vit


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_vit_variant_token_keep_fuse(variant):
    options = VARIANTS[variant]
    vit = _randomised_vit(options)
    ours = TokenKeepFuseViT(**options)
    ours.eval()
    ours.load_state_dict(vit.state_dict(), strict=True)
    images = torch.randn(2, 3, options['img_size'], options['img_size'])
    with torch.no_grad():
        dense = vit(images)[0]
        assert torch.equal(ours(images)[0], dense)
        # Selection blocks that keep every token: the same function.
        ours.keep_rate = 1.0
        ours.set_keep_layers([0, 1])
        torch.testing.assert_close(ours(images)[0], dense)
        ours.keep_rate = 0.5
        reduced = ours(images)[0]
        raw = TokenKeepFuseViT(
            **options, out_type='raw', keep_rate=0.5, keep_layers=(0, 1))
        raw.eval()
        raw.load_state_dict(vit.state_dict(), strict=True)
        tokens = raw(images)[0]
    assert reduced.shape == dense.shape and torch.isfinite(reduced).all()
    assert not torch.allclose(reduced, dense)
    patches = (options['img_size'] // options['patch_size'])**2
    first = patches // 2 + 1  # floor(0.5 N) kept + the fused token
    assert tokens.shape == (2, 1 + first // 2 + 1, 32)


def test_vit_variant_eligibility():
    dinov2 = assign_roles(VisionTransformer(**VARIANTS['dinov2']))
    assert dinov2['layers.0.attn.gamma1.weight'] == FULL  # layer scale
    assert dinov2['layers.1.ffn.gamma2.weight'] == FULL
    clip = assign_roles(VisionTransformer(**VARIANTS['clip']))
    assert clip['pre_norm.weight'] == FROZEN
    assert 'patch_embed.projection.bias' not in clip
    eva = MODELS.build(EVA02)
    roles = assign_roles(eva)
    assert roles['layers.0.mlp.w12.weight'] == MASKED
    assert roles['layers.0.mlp.w3.weight'] == MASKED
    assert roles['layers.0.mlp.norm.weight'] == FROZEN  # sub-LN
    assert {n
            for n, r in roles.items() if r == MASKED} == {
                n
                for n, p in eva.named_parameters()
                if p.dim() > 1 and n not in ('cls_token', 'pos_embed')
            }
    frozen = assign_roles(eva, dict(train_layer_scale=False))
    assert frozen == roles  # no layer scale in EVA-02


def test_eva02_token_selection_is_a_clear_error():
    options = {k: v for k, v in EVA02.items() if k != 'type'}
    with pytest.raises(
            ValueError,
            match=r"EVA-02 option\(s\) \['sub_ln'\]"
            ".*RoPE.*type='ViTEVA02'"):
        TokenKeepFuseViT(**options)
    eva_state = MODELS.build(EVA02).state_dict()
    ours = TokenKeepFuseViT(**dict(TINY_VIT, img_size=56, patch_size=14))
    with pytest.raises(ValueError, match=r'cannot load the EVA-02 state dict'):
        ours.load_state_dict(eva_state, strict=False)


def test_unclassifiable_parameter_is_an_error():
    model = VisionTransformer(**TINY_VIT)
    model.layers[0].attn.register_parameter('temperature',
                                            torch.nn.Parameter(torch.ones(2)))
    with pytest.raises(
            ValueError,
            match=r'cannot classify 1 parameter\(s\): '
            r'layers\.0\.attn\.temperature \(MultiheadAttention, '
            r'shape \(2,\)\).*frozen_keys'):
        assign_roles(model)
    roles = assign_roles(model, dict(frozen_keys=[r'\.temperature$']))
    assert roles['layers.0.attn.temperature'] == FROZEN


RUN_VARIANTS = {
    'dinov2': ("type='TokenKeepFuseViT', layer_scale_init_value=1e-5",
               'token_placement=dict(mode=\'sparse\', num_blocks=1), '),
    'clip': ("type='TokenKeepFuseViT', pre_norm=True, "
             "layer_cfgs=dict(act_cfg=dict(type='QuickGELU'))",
             'token_placement=dict(mode=\'sparse\', num_blocks=1), '),
    'eva02': ("type='ViTEVA02', sub_ln=True, final_norm=False, "
              "out_type='avg_featmap'", ''),
}


@pytest.mark.parametrize('variant', list(RUN_VARIANTS))
def test_vit_variant_selection_through_the_runner(variant, mini_vtab,
                                                  tmp_path):
    """Fisher pass, selection, sparse-value training (and, for the
    VisionTransformer configurations, token co-selection) in one epoch from
    a 'pretrained' backbone; the delta export merges back exactly."""
    backbone, placement = RUN_VARIANTS[variant]
    config = write_tiny_config(
        str(tmp_path / 'cfg.py'),
        mini_vtab,
        max_epochs=1,
        batch_size=32,
        base='vit-tiny_trpts-param-paper-frozen_mini-vtab.py',
        extra=f"""
model['backbone'].update(dict({backbone}))
custom_hooks = [dict(type='FisherSelectionHook', target_ratio=0.2,
                     batch_size=32, progress=False, {placement}
                     save_plot=False)]
param_scheduler = []  # one short epoch: no warm-up
work_dir = '{tmp_path / 'work'}'
""")
    cfg = Config.fromfile(config)
    cfg.log_level = 'WARNING'
    torch.manual_seed(0)
    pretrained = MODELS.build(cfg.model.backbone)
    pretrained.init_weights()
    base = {f'backbone.{k}': v for k, v in pretrained.state_dict().items()}
    torch.save(dict(meta={}, state_dict=base), str(tmp_path / 'base.pth'))
    cfg.model.backbone.init_cfg = dict(
        type='Pretrained',
        checkpoint=str(tmp_path / 'base.pth'),
        prefix='backbone.')
    runner = Runner.from_cfg(cfg)
    runner.train()
    selection = runner.optim_wrapper.selection
    assert selection['budget']['realized_ratio'] == pytest.approx(
        0.2, rel=0.05)
    assert sorted(selection['block_densities']) == [0, 1]
    backbone = runner.model.backbone
    if placement:
        assert len(backbone.keep_layers) == 1
        assert selection['token_blocks'] == backbone.keep_layers
    else:
        assert type(backbone).__name__ == 'ViTEVA02'
    model = runner.model
    model.eval()
    trained = model.state_dict()
    delta = make_delta(trained, selection, base_state_dict=base)
    merged = merge_checkpoint(
        'delta', delta, 'delta.pth', base=dict(state_dict=base))['state_dict']
    plain = MODELS.build(
        dict(cfg.model, backbone=dict(cfg.model.backbone, init_cfg=None)))
    plain.eval()
    plain.load_state_dict(merged, strict=True)  # keep_layer_mask included
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            plain(images, mode='tensor'), model(images, mode='tensor'))
    assert 0 <= runner.test()['accuracy/top1'] <= 100
