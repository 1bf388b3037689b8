"""Parity with the released SPT and Sparse-Tuning code.

docs/methods/spt.md §2.1 and docs/methods/sparse_tuning.md §2e:

1. ``branch_init='reference'``: the branches start from the state the
   reference trains from -- timm's ``self.apply(_init_vit_weights)`` after
   construction, i.e. ``trunc_normal_(w, std=.02)`` with timm's *absolute*
   bounds a=-2, b=2 and zero biases; the pre-trained weights (loaded last)
   are untouched.  ``'zero'`` (the class default, the embedded demos) keeps
   zero up-projections.
2. SPT's attn.proj branches (LoRA and Adapter) have no input dropout.
3. ``module_dropout_mask='shared'``: the q/k/v LoRAs of the fused qkv see
   one dropped copy of the block input.
"""
import copy
import glob
import inspect
import logging
import math
import os.path as osp
from contextlib import contextmanager
from itertools import count

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import REPO, write_backbone_checkpoint
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmpretrain.registry import MODELS
from test_spt_allocation import allocate_planted

from mmtrpts.checkpoints import merge_spt_lora
from mmtrpts.models import SparseTuningViT
from mmtrpts.models.backbones import SPTViT
from mmtrpts.models.backbones.spt_vit import plain_vit_cfg
from mmtrpts.models.peft import (PaperDenseAdapter, SPTAdapter, SPTLinear,
                                 SPTLoRA, StageSumAdapter)
from mmtrpts.models.peft.branch_init import (reference_init_,
                                             reference_init_linears_)
from mmtrpts.selection.spt_allocation import (is_scored, spt_units,
                                              unit_threshold)

STD = 0.02
#: P(|N(0, 1)| > 2): the share beyond +-2 std of an untruncated normal.
BEYOND_2STD = math.erfc(2 / math.sqrt(2))
TINY = dict(
    arch=dict(
        embed_dims=64, num_layers=2, num_heads=2, feedforward_channels=128),
    img_size=32,
    patch_size=8)
TINY12 = dict(
    arch=dict(
        embed_dims=32, num_layers=12, num_heads=2, feedforward_channels=64),
    img_size=32,
    patch_size=8)
QKV = 'layers.0.attn.qkv'
PROJ = 'layers.0.attn.proj'
STRUCTURED = [
    f'{QKV}.weight[q]', f'{QKV}.weight[k]', f'{QKV}.weight[v]',
    f'{PROJ}.weight', 'layers.1.ffn.layers.0.0.weight',
    'layers.1.ffn.layers.1.weight'
]
CONFIGS = osp.join(REPO, 'configs')
BENCHMARK_CONFIGS = sorted(
    glob.glob(osp.join(CONFIGS, 'spt', '*.py')) +
    glob.glob(osp.join(CONFIGS, 'sparse-tuning', '*.py')) + [
        osp.join(CONFIGS, '_base_', 'models', 'spt-lora_vit-b16_in21k.py'),
        osp.join(CONFIGS, '_base_', 'models', 'sparse-tuning_vit-b16_in21k.py')
    ])
EMBEDDED_CONFIGS = [
    osp.join(CONFIGS, 'embedded', 'vit-tiny_spt-lora_mini-vtab.py'),
    osp.join(CONFIGS, 'embedded', 'vit-tiny_sparse-tuning_mini-vtab.py')
]
_IDS = count()


# -- the reference's init, transcribed from timm 0.5.4 -----------------------
def _timm_trunc_normal_(tensor, mean=0., std=1., a=-2., b=2.):
    """``timm.models.layers.trunc_normal_`` (timm 0.5.4, the version both
    reference codes pin): ``a`` and ``b`` are absolute bounds."""

    def norm_cdf(x):
        return (1. + math.erf(x / math.sqrt(2.))) / 2.

    with torch.no_grad():
        low, high = norm_cdf((a - mean) / std), norm_cdf((b - mean) / std)
        tensor.uniform_(2 * low - 1, 2 * high - 1)
        tensor.erfinv_()
        tensor.mul_(std * math.sqrt(2.))
        tensor.add_(mean)
        tensor.clamp_(min=a, max=b)
        return tensor


def _timm_init_vit_weights(module):
    """The reference's ``self.apply(_init_vit_weights)`` on a Linear
    (``weight_init=''``; ``apply`` passes no name, so no head special
    case)."""
    if isinstance(module, nn.Linear):
        _timm_trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _assert_reference_statistics(weights, biases=()):
    """Pooled weights ~ N(0, 0.02^2), *not* truncated at +-2 std (timm's
    bounds are +-2 absolute = +-100 std); every bias exactly zero.  The
    bounds are 5 standard errors (the draws are seeded)."""
    flat = torch.cat([w.detach().flatten() for w in weights])
    n = flat.numel()
    assert n >= 1000
    assert abs(flat.std().item() - STD) < 5 * STD / math.sqrt(2 * n)
    assert abs(flat.mean().item()) < 5 * STD / math.sqrt(n)
    beyond = (flat.abs() > 2 * STD).double().mean().item()
    assert abs(beyond - BEYOND_2STD) < 5 * math.sqrt(BEYOND_2STD *
                                                     (1 - BEYOND_2STD) / n)
    if n >= 20_000:  # ~0.27% beyond 3 std: dozens of entries
        assert flat.abs().max() > 3 * STD
    assert flat.abs().max() <= 2.
    for bias in biases:
        assert not bias.any()


@contextmanager
def _log_records():
    logger = MMLogger.get_instance(
        f'test_reference_parity_{next(_IDS)}', log_level='INFO')
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


# -- fixtures ----------------------------------------------------------------
def _shapes(**vit):
    with torch.device('meta'):
        backbone = MODELS.build(dict(type='VisionTransformer', **vit))
    return {
        n: list(p.shape)
        for n, p in backbone.named_parameters() if is_scored(n)
    }


@pytest.fixture(scope='module', params=['lora', 'adapter'])
def allocation(request, tmp_path_factory):
    """Structured q, k, v and proj in block 0, fc1 and fc2 in block 1."""
    structured_type = request.param
    shapes = _shapes(**TINY)
    units = spt_units(shapes)
    plan = {
        name: unit_threshold(units[name], structured_type, 8, 10, 5)[0]
        for name in STRUCTURED
    }
    plan['layers.1.ln2.weight'] = 3
    allocation, _ = allocate_planted(
        shapes, plan, structured_type, cls_token=64)
    path = str(tmp_path_factory.mktemp('parity') / f'{structured_type}.pth')
    torch.save(allocation, path)
    return path, structured_type


@pytest.fixture(scope='module')
def plain_vit(tmp_path_factory) -> str:
    """A backbone-only checkpoint (``backbone.``) of a random tiny ViT."""
    return write_backbone_checkpoint(
        str(tmp_path_factory.mktemp('plain') / 'vit.pth'), **TINY)


def _spt(path, structured_type, checkpoint=None, **kwargs):
    torch.manual_seed(0)
    init_cfg = None if checkpoint is None else dict(
        type='Pretrained', checkpoint=checkpoint, prefix='backbone.')
    return MODELS.build(
        dict(
            type='SPTViT',
            sensitivity_file=path,
            structured_type=structured_type,
            init_cfg=init_cfg,
            **TINY,
            **kwargs))


def _branch_tensors(model, tag):
    weights, biases = [], []
    for name, param in model.named_parameters():
        if tag in name:
            (biases if name.endswith('bias') else weights).append(param)
    return weights, biases


# -- 1. initialisation -------------------------------------------------------
def test_reference_init_is_timms_trunc_normal_with_absolute_bounds():
    torch.manual_seed(0)
    ours = nn.Linear(768, 64)
    timm = nn.Linear(768, 64)
    torch.manual_seed(1)
    reference_init_(ours.weight, ours.bias)
    torch.manual_seed(1)
    _timm_init_vit_weights(timm)
    assert torch.equal(ours.weight, timm.weight)
    assert torch.equal(ours.bias, timm.bias) and not ours.bias.any()
    _assert_reference_statistics([ours.weight], [ours.bias])  # 49,152
    # Not mmengine's/relative truncation at +-2 std: about 4.6% lie beyond.
    assert (ours.weight.abs() > 2 * STD).sum() > 2000

    block = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8))
    assert reference_init_linears_(block) == 2
    assert not block[0].bias.any() and not block[2].bias.any()


@pytest.mark.parametrize('cls', [SPTLoRA, SPTAdapter])
def test_spt_branch_init_modes(cls):
    torch.manual_seed(0)
    reference = cls(768, 768, 8, branch_init='reference')
    weights, biases = _branch_tensors(reference, '')
    _assert_reference_statistics(weights, biases)  # 12,288 entries
    up = reference.up if cls is SPTLoRA else reference.up.weight
    _assert_reference_statistics([up])  # B / up is not zero
    if cls is SPTAdapter:  # the down bias is zeroed too
        assert not reference.down.bias.any()
    x = torch.randn(4, 768)
    assert reference.eval()(x).abs().mean() > 1e-3  # LoRA ~0.03, Adapter ~0.01

    zero = cls(768, 768, 8)  # the class default
    assert zero.branch_init == 'zero'
    up = zero.up if cls is SPTLoRA else zero.up.weight
    assert not up.any()
    assert not zero.eval()(x).any()
    with pytest.raises(ValueError, match='branch_init'):
        cls(8, 8, 2, branch_init='timm')


@pytest.mark.parametrize('dense', ['stage_sum', 'paper'])
def test_dense_adapter_init_modes_and_output_at_init(dense):
    torch.manual_seed(0)
    x = torch.randn(2, 197, 768)
    if dense == 'stage_sum':
        reference = StageSumAdapter(768, branch_init='reference')
        zero = StageSumAdapter(768)

        def run(adapter):
            return adapter(x)
    else:
        reference = PaperDenseAdapter(768, 2, branch_init='reference')
        zero = PaperDenseAdapter(768, 2)

        def run(adapter):
            return adapter(x, [x])

    weights, biases = _branch_tensors(reference, '')
    _assert_reference_statistics(weights, biases)
    with torch.no_grad():
        out = run(reference)
    # The released code's adapters output ~0.05 per entry at step 0 on a
    # unit-variance stream (stage-sum: std 0.06, mean |.| 0.05).
    assert 0.02 < out.abs().mean() < 0.2
    reference.init_weights()  # init_weights keeps the mode
    _assert_reference_statistics(*_branch_tensors(reference, ''))
    with torch.no_grad():
        assert not run(zero).any()


@pytest.mark.parametrize('dense', ['stage_sum', 'paper'])
def test_sparse_tuning_vit_adapters_output_nonzero_only_with_reference(dense):
    image = torch.randn(2, 3, 32, 32)
    for branch_init in ('reference', 'zero'):
        torch.manual_seed(0)
        model = SparseTuningViT(
            **TINY12,
            dense=dense,
            adapter_cfg=dict(hidden_dims=16) if dense == 'paper' else None,
            branch_init=branch_init)
        model.init_weights()
        outs = []
        hooks = [
            a.register_forward_hook(lambda m, args, out: outs.append(out))
            for a in model.adapters
        ]
        with torch.no_grad():
            model(image)
        for hook in hooks:
            hook.remove()
        assert len(outs) == 12
        if branch_init == 'zero':
            assert all(not out.any() for out in outs)
        else:
            assert all(out.abs().mean() > 1e-3 for out in outs)
            _assert_reference_statistics(*_branch_tensors(model, 'adapters.'))


def test_spt_pretrained_weights_survive_and_branches_get_the_reference_init(
        allocation, plain_vit):
    path, structured_type = allocation
    model = _spt(path, structured_type, plain_vit, branch_init='reference')
    with _log_records() as records:
        model.init_weights()
    # The method-state loading stays quiet: one INFO line, no WARNING.
    assert [r for r in records if r.levelno >= logging.WARNING] == []
    assert sum('holds none' in r.getMessage() for r in records) == 1
    # Every pre-trained tensor (qkv / proj / fc weights included) is the
    # checkpoint's, bit for bit.
    saved = torch.load(plain_vit, weights_only=True)['state_dict']
    state = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(state[key[len('backbone.'):]], value), key
    # The branches -- fc1/fc2 ones too, which the FFN's xavier init reaches
    # -- are trunc-normal(0.02) with zero biases after the load.
    ffn = [
        m for n, m in model.named_modules()
        if n.startswith('layers.1.ffn') and isinstance(m, (SPTLoRA,
                                                           SPTAdapter))
    ]
    assert len(ffn) == 2
    weights, biases = _branch_tensors(model, '.spt_')
    _assert_reference_statistics(weights, biases)
    assert all(w.any() for w in weights)

    # The zero mode after the same load: zero up-projections.
    zero = _spt(path, structured_type, plain_vit)
    zero.init_weights()
    for name, param in zero.named_parameters():
        if '.spt_' in name and '.up' in name:
            assert not param.any(), name


@pytest.mark.parametrize('kind', ['spt', 'sparse_tuning'])
def test_branches_held_by_the_checkpoint_are_not_reinitialised(
        kind, allocation, tmp_path):
    path, structured_type = allocation

    def build(checkpoint=None):
        if kind == 'spt':
            return _spt(
                path, structured_type, checkpoint, branch_init='reference')
        init_cfg = None if checkpoint is None else dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.')
        return SparseTuningViT(
            **TINY,
            keep_layers=(1, ),
            branch_init='reference',
            init_cfg=init_cfg)

    trained = build()
    tag = '.spt_' if kind == 'spt' else 'adapters.'
    torch.manual_seed(5)
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if tag in name:
                param.normal_(std=0.3)
    checkpoint = str(tmp_path / 'trained.pth')
    torch.save(
        dict(state_dict={
            f'backbone.{k}': v
            for k, v in trained.state_dict().items()
        }), checkpoint)
    model = build(checkpoint)
    model.init_weights()
    state = model.state_dict()
    for key, value in trained.state_dict().items():
        assert torch.equal(state[key], value), key


def test_sparse_tuning_pretrained_weights_survive(plain_vit):
    model = SparseTuningViT(
        **TINY,
        keep_layers=(1, ),
        branch_init='reference',
        init_cfg=dict(
            type='Pretrained', checkpoint=plain_vit, prefix='backbone.'))
    with _log_records() as records:
        model.init_weights()
    assert [r for r in records if r.levelno >= logging.WARNING] == []
    saved = torch.load(plain_vit, weights_only=True)['state_dict']
    state = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(state[key[len('backbone.'):]], value), key
    _assert_reference_statistics(*_branch_tensors(model, 'adapters.'))


# -- 2. no input dropout on attn.proj ---------------------------------------
def test_proj_branches_have_no_input_dropout(allocation):
    path, structured_type = allocation
    model = _spt(
        path,
        structured_type,
        branch_init='reference',
        module_dropout=0.5,
        module_drop_path=0.)
    model.train()
    proj = model.get_submodule(PROJ)
    qkv = model.get_submodule(QKV)
    branch = proj.branches['all']
    assert isinstance(branch.dropout, nn.Identity)
    assert isinstance(proj.shared_dropout, nn.Identity)
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        first, second = proj(x), proj(x)
        assert torch.equal(first, second)  # deterministic in train mode
        # The reference: proj(x) + structured_proj(x), no dropout.
        expected = F.linear(x, proj.weight, proj.bias)
        if structured_type == 'lora':
            expected = expected + F.linear(F.linear(x, branch.down), branch.up)
        else:
            expected = expected + branch.up(F.gelu(branch.down(x)))
        torch.testing.assert_close(first, expected)
        # ... while the q/k/v branches do drop their input.
        assert not torch.equal(qkv(x), qkv(x))


# -- 3. one dropout mask for the q/k/v LoRAs --------------------------------
@pytest.mark.parametrize('mask', ['shared', 'per_branch'])
def test_qkv_lora_dropout_mask(allocation, mask):
    path, structured_type = allocation
    model = _spt(
        path,
        structured_type,
        branch_init='reference',
        module_dropout=0.5,
        module_drop_path=0.,
        module_dropout_mask=mask)
    model.train()
    qkv = model.get_submodule(QKV)
    assert sorted(qkv.branches) == ['k', 'q', 'v']
    # What each branch projects: the output of its own input dropout (an
    # Identity when the layer drops its input once for all branches).
    seen = {}
    hooks = [
        qkv.branches[label].dropout.register_forward_hook(
            lambda m, args, out, label=label: seen.update({label: out}))
        for label in 'qkv'
    ]
    x = torch.randn(2, 17, 64)
    torch.manual_seed(3)
    with torch.no_grad():
        out = qkv(x)
    for hook in hooks:
        hook.remove()
    if structured_type == 'adapter':
        # Sequential: each branch reads its own output rows (the reference
        # drops q, k and v separately); the mask mode changes nothing.
        assert isinstance(qkv.shared_dropout, nn.Identity)
        assert all(
            isinstance(qkv.branches[label].dropout, nn.Dropout)
            for label in 'qkv')
        return
    if mask == 'per_branch':
        assert isinstance(qkv.shared_dropout, nn.Identity)
        assert not torch.equal(seen['q'], seen['k'])
        assert not torch.equal(seen['k'], seen['v'])
        return
    assert isinstance(qkv.shared_dropout, nn.Dropout)
    assert all(
        isinstance(qkv.branches[label].dropout, nn.Identity)
        for label in 'qkv')
    assert torch.equal(seen['q'], seen['k']) and torch.equal(
        seen['k'], seen['v'])
    dropped = seen['q'] == 0
    assert dropped.any() and not dropped.all()
    torch.testing.assert_close(seen['q'][~dropped], 2 * x[~dropped])
    # The reference computation: x_drop = structured_drop(x) once, then
    # q = q(x) + structured_q(x_drop), k and v alike.
    torch.manual_seed(3)
    x_drop = F.dropout(x, 0.5, training=True)
    parts = []
    for label, (start, stop) in zip('qkv', [(0, 64), (64, 128), (128, 192)]):
        branch = qkv.branches[label]
        parts.append(
            F.linear(x, qkv.weight[start:stop], qkv.bias[start:stop]) +
            F.linear(F.linear(x_drop, branch.down), branch.up))
    torch.testing.assert_close(out, torch.cat(parts, dim=-1))
    # One mask per layer input elsewhere too (fc1's single LoRA).
    fc1 = model.get_submodule('layers.1.ffn.layers.0.0')
    assert isinstance(fc1.shared_dropout, nn.Dropout)


def test_shared_dropout_is_refused_where_it_cannot_apply():
    linear = nn.Linear(8, 24)
    with pytest.raises(ValueError, match='parallel'):
        SPTLinear(linear, 'adapter', parallel=False, shared_dropout=0.1)
    layer = SPTLinear(linear, 'lora', parallel=True, shared_dropout=0.1)
    with pytest.raises(ValueError, match='dropout=0'):
        layer.add_branch('q', 2, dropout=0.1, drop_path=0.)
    with pytest.raises(ValueError, match='module_dropout_mask'):
        SPTViT(sensitivity_file='unused.pth', module_dropout_mask='one')


def test_lora_merge_stays_exact_with_the_reference_settings(allocation):
    """Non-zero B at step 0 and the shared mask: the merge is W += B A
    whatever the init, and dropout is the identity at eval."""
    path, structured_type = allocation
    if structured_type == 'adapter':
        pytest.skip('SPT-Adapter is not mergeable')
    model = _spt(
        path,
        structured_type,
        branch_init='reference',
        module_dropout_mask='shared')
    model.init_weights()
    assert all(p.any() for n, p in model.named_parameters()
               if '.spt_' in n and n.endswith('.up'))
    model.eval()
    plain = MODELS.build(dict(type='VisionTransformer', **TINY))
    plain.load_state_dict(merge_spt_lora(model.state_dict()), strict=True)
    plain.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = model(x)[0]
        torch.testing.assert_close(plain(x)[0], ours, atol=1e-5, rtol=0)
        # The branches do change the function at step 0.
        bare = copy.deepcopy(model)
        for name, param in bare.named_parameters():
            if '.spt_' in name and name.endswith('.up'):
                param.zero_()
        assert not torch.allclose(ours, bare(x)[0], atol=1e-4)


# -- defaults and configs ----------------------------------------------------
def test_class_defaults_keep_the_original_behaviour():
    spt = inspect.signature(SPTViT.__init__).parameters
    sparse = inspect.signature(SparseTuningViT.__init__).parameters
    assert spt['branch_init'].default == 'zero'
    assert spt['module_dropout_mask'].default == 'per_branch'
    assert sparse['branch_init'].default == 'zero'


@pytest.mark.parametrize(
    'config', BENCHMARK_CONFIGS, ids=lambda p: osp.relpath(p, CONFIGS))
def test_benchmark_configs_select_the_reference(config):
    backbone = Config.fromfile(config).model.backbone
    assert backbone.branch_init == 'reference'
    if backbone.type == 'SPTViT':
        assert backbone.module_dropout_mask == 'shared'
        assert backbone.module_dropout == 0.1
        # Stage 1 scores the plain ViT: the SPT-only arguments are dropped.
        plain = plain_vit_cfg(backbone)
        assert 'branch_init' not in plain
        assert 'module_dropout_mask' not in plain
        with torch.device('meta'):
            MODELS.build(plain)
    else:
        assert backbone.type == 'SparseTuningViT'


@pytest.mark.parametrize('config', EMBEDDED_CONFIGS, ids=osp.basename)
def test_embedded_demos_keep_the_zero_init(config):
    backbone = Config.fromfile(config).model.backbone
    assert backbone.get('branch_init', 'zero') == 'zero'
    assert backbone.get('module_dropout_mask', 'per_branch') == 'per_branch'
