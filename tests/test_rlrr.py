"""RLRR: modules, RLRRViT, merging, the merge tool and the wd rule."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import PYTHON, REPO, assert_ok, run_tool
from mmengine.config import Config
from mmengine.optim import DefaultOptimWrapperConstructor
from mmpretrain.models import VisionTransformer
from mmpretrain.registry import MODELS

from mmtrpts.checkpoints.merge_rlrr import merge_rlrr_state_dict
from mmtrpts.models.backbones import RLRRViT
from mmtrpts.models.peft.rlrr import (SSF, RLRRLinear, SSFLayerNorm,
                                      rlrr_parameters)

TINY = dict(
    arch=dict(
        embed_dims=48, num_layers=2, num_heads=3, feedforward_channels=96),
    img_size=32,
    patch_size=8)
MERGE_TOOL = osp.join(REPO, 'tools', 'model_converters', 'merge.py')


def _perturb(module: nn.Module) -> None:
    """Random "trained" RLRR/SSF vectors (identity init has zeros)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in rlrr_parameters(module):
            param.add_(0.3 * torch.randn(param.shape, generator=gen))


def _trainable(module: nn.Module) -> set:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def _classifier(backbone_type: str) -> nn.Module:
    return MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type=backbone_type, **TINY),
            head=dict(type='LinearClsHead', num_classes=5, in_channels=48)))


# -- modules ------------------------------------------------------------------
def test_rlrr_linear_keeps_names_and_rescales_w():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    rlrr = RLRRLinear.from_linear(base)
    assert list(rlrr.state_dict()) == [
        'weight', 'bias', 'scale_left', 'scale_right', 'shift'
    ]
    assert rlrr.scale_left.shape == (4, ) and rlrr.shift.shape == (4, )
    assert rlrr.scale_right.shape == (1, 6)
    assert torch.equal(rlrr.weight, base.weight)
    _perturb(rlrr)
    x = torch.randn(3, 6)
    s_l, s_r = rlrr.scale_left, rlrr.scale_right[0]
    w = base.weight + torch.diag(s_l) @ base.weight @ torch.diag(s_r)
    expected = F.linear(x, w, base.bias + rlrr.shift)
    torch.testing.assert_close(rlrr(x), expected)
    torch.testing.assert_close(rlrr.merge()(x), expected)


def test_fused_qkv_rescales_each_slice_with_its_own_right_vector():
    torch.manual_seed(0)
    qkv = RLRRLinear(8, 24, groups=3)
    _perturb(qkv)
    assert qkv.scale_right.shape == (3, 8)
    assert sum(p.numel() for p in rlrr_parameters(qkv)) == 3 * (8 + 8 + 8)
    x = torch.randn(2, 8)
    out = qkv(x)
    for g in range(3):  # q, k, v: an independent RLRR Linear each
        rows = slice(8 * g, 8 * (g + 1))
        part = RLRRLinear(8, 8)
        part.load_state_dict(
            dict(
                weight=qkv.weight[rows],
                bias=qkv.bias[rows],
                scale_left=qkv.scale_left[rows],
                scale_right=qkv.scale_right[g:g + 1],
                shift=qkv.shift[rows]))
        torch.testing.assert_close(out[:, rows], part(x))
    with pytest.raises(ValueError, match='groups must divide'):
        RLRRLinear(8, 24, groups=5)


def test_inits():
    torch.manual_seed(0)
    ref = RLRRLinear(768, 2304, groups=3)
    assert ref.scale_right.abs().max() <= math.sqrt(6 / 768)
    assert ref.scale_right.abs().max() > 0.9 * math.sqrt(6 / 768)
    assert ref.scale_left.abs().max() <= math.sqrt(6)
    assert ref.scale_left.abs().max() > 0.9 * math.sqrt(6)
    assert not ref.shift.any()
    ssf = SSF(768)
    assert abs(ssf.scale.mean() - 1) < 0.01 and 0.015 < ssf.scale.std() < .025
    assert ssf.shift.abs().mean() < 0.03 and ssf.shift.any()

    ident = RLRRLinear(768, 768, init='identity')
    assert not ident.scale_left.any() and ident.scale_right.any()
    assert torch.equal(ident.merged_weight(), ident.weight)
    assert torch.equal(SSF(4, 'identity').scale, torch.ones(4))
    with pytest.raises(ValueError, match="init must be one of .* 'zero'"):
        SSF(4, init='zero')
    with pytest.raises(ValueError, match='must have one'):
        RLRRLinear.from_linear(nn.Linear(4, 4, bias=False))


def test_ssf_layer_norm_merges():
    torch.manual_seed(0)
    norm = nn.LayerNorm(6, eps=1e-6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    ssf_norm = SSFLayerNorm.from_layer_norm(norm)
    assert list(
        ssf_norm.state_dict()) == ['weight', 'bias', 'ssf.scale', 'ssf.shift']
    x = torch.randn(3, 6)
    torch.testing.assert_close(
        ssf_norm(x),
        norm(x) * ssf_norm.ssf.scale + ssf_norm.ssf.shift)
    merged = ssf_norm.merge()
    assert type(merged) is nn.LayerNorm and merged.eps == 1e-6
    torch.testing.assert_close(merged(x), ssf_norm(x))
    with pytest.raises(TypeError, match='affine nn.LayerNorm'):
        SSFLayerNorm.from_layer_norm(nn.LayerNorm(6, elementwise_affine=False))


# -- RLRRViT ------------------------------------------------------------------
def test_vit_b_trains_288768_backbone_parameters():
    backbone = RLRRViT(arch='b')
    counts = {True: 0, False: 0}
    for param in backbone.parameters():
        counts[param.requires_grad] += param.numel()
    assert counts[True] == 288_768  # docs/methods/rlrr.md §1
    assert counts[False] == 85_798_656  # the plain ViT-B/16 backbone


def test_trainable_set_is_rlrr_and_ssf_only():
    backbone = RLRRViT(**TINY)
    expected = {
        'patch_embed.norm.scale', 'patch_embed.norm.shift', 'ln1.ssf.scale',
        'ln1.ssf.shift'
    }
    for i in range(2):
        for name in ('attn.qkv', 'attn.proj', 'ffn.layers.0.0',
                     'ffn.layers.1'):
            expected |= {
                f'layers.{i}.{name}.{v}'
                for v in ('scale_left', 'scale_right', 'shift')
            }
        for norm in ('ln1', 'ln2'):
            expected |= {
                f'layers.{i}.{norm}.ssf.{v}'
                for v in ('scale', 'shift')
            }
    assert _trainable(backbone) == expected
    # DDP (find_unused_parameters=False): every trainable tensor gets a grad.
    backbone(torch.randn(2, 3, 32, 32))[0].sum().backward()
    assert {n
            for n, p in backbone.named_parameters()
            if p.grad is not None} == expected
    # The plain ViT's tensors keep their names (checkpoints load as-is).
    plain = VisionTransformer(**TINY).state_dict()
    assert set(plain) == set(backbone.state_dict()) - expected
    # frozen_stages: as VisionTransformer, RLRR/SSF of the stage included.
    frozen = RLRRViT(**TINY, frozen_stages=1)
    assert _trainable(frozen) == {
        n
        for n in expected if n.startswith(('layers.1.', 'ln1.'))
    }
    assert not frozen.layers[0].training and frozen.layers[1].training


def test_identity_init_is_the_pretrained_vit_exactly():
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY, out_type='avg_featmap')
    rlrr = RLRRViT(**TINY, out_type='avg_featmap', rlrr_init='identity')
    missing, unexpected = rlrr.load_state_dict(vit.state_dict(), strict=False)
    assert not unexpected and set(missing) == _trainable(rlrr)
    vit.eval()
    rlrr.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rlrr(x)[0], vit(x)[0])
    merged = merge_rlrr_state_dict(rlrr.state_dict())
    assert list(merged) == list(vit.state_dict())
    assert all(torch.equal(merged[k], v) for k, v in vit.state_dict().items())


@pytest.mark.parametrize('out_type', ['cls_token', 'avg_featmap'])
def test_merged_state_dict_loads_strictly_with_the_same_outputs(out_type):
    torch.manual_seed(0)
    rlrr = RLRRViT(**TINY, out_type=out_type, rlrr_init='reference')
    _perturb(rlrr)
    merged = merge_rlrr_state_dict(rlrr.state_dict())
    vit = VisionTransformer(**TINY, out_type=out_type)
    vit.load_state_dict(merged, strict=True)
    vit.eval()
    rlrr.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        diff = (rlrr(x)[0] - vit(x)[0]).abs().max().item()
    assert diff < 1e-5


def test_merge_errors_name_the_missing_key():
    state = RLRRViT(**TINY).state_dict()
    del state['layers.0.attn.qkv.shift']
    with pytest.raises(KeyError, match="'layers.0.attn.qkv.shift'"):
        merge_rlrr_state_dict(state)
    state = RLRRViT(**TINY).state_dict()
    state['layers.0.attn.extra.scale_right'] = torch.ones(1, 3)
    with pytest.raises(ValueError, match='layers.0.attn.extra.scale_right'):
        merge_rlrr_state_dict(state)


def test_branch_dropout_and_argument_errors():
    backbone = RLRRViT(
        **dict(TINY, arch=dict(TINY['arch'], num_layers=3)),
        branch_dropout=0.2)
    for layer, p in zip(backbone.layers, (0., 0.1, 0.2)):
        for module in (layer.attn.out_drop, layer.ffn.dropout_layer):
            assert type(module) is nn.Dropout
            assert module.p == pytest.approx(p)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(backbone(x)[0], backbone(x)[0])  # training
        backbone.eval()
        assert torch.equal(backbone(x)[0], backbone(x)[0])
    with pytest.raises(ValueError, match='drop_path_rate must be 0, got 0.1'):
        RLRRViT(**TINY, branch_dropout=0.1, drop_path_rate=0.1)
    with pytest.raises(ValueError, match='qkv_bias=True'):
        RLRRViT(**TINY, qkv_bias=False)
    with pytest.raises(ValueError, match='pre_norm must be False'):
        RLRRViT(**TINY, pre_norm=True)
    with pytest.raises(ValueError, match="rlrr_init must be one of"):
        RLRRViT(**TINY, rlrr_init='zero')


# -- merge tool ---------------------------------------------------------------
def test_merge_tool_writes_a_plain_vit_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = _classifier('RLRRViT')
    _perturb(model.backbone)
    src, out = str(tmp_path / 'epoch_1.pth'), str(tmp_path / 'merged.pth')
    torch.save(
        dict(
            meta=dict(dataset_meta=dict(classes=list('abcde'))),
            state_dict=model.state_dict()), src)
    assert_ok(run_tool([PYTHON, MERGE_TOOL, 'rlrr', src, out]))
    merged = torch.load(out, weights_only=True)
    assert merged['meta']['dataset_meta'] == dict(classes=list('abcde'))
    plain = _classifier('VisionTransformer')
    plain.load_state_dict(merged['state_dict'], strict=True)
    model.eval()
    plain.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), atol=1e-5, rtol=0)
    proc = run_tool(
        [PYTHON, MERGE_TOOL, 'rlrr', out,
         str(tmp_path / 'again.pth')])
    assert proc.returncode != 0 and 'holds no RLRR parameters' in proc.stderr


# -- optimiser ----------------------------------------------------------------
def test_weight_decay_rule_of_the_recipe():
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'rlrr', 'vit-b_vtab1k-camelyon.py'))
    model = _classifier('RLRRViT')
    optim_wrapper = cfg.optim_wrapper.copy()
    paramwise_cfg = optim_wrapper.pop('paramwise_cfg')
    wrapper = DefaultOptimWrapperConstructor(optim_wrapper, paramwise_cfg)(
        model)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {
        names[id(p)]: group['weight_decay']
        for group in wrapper.optimizer.param_groups
        for p in group['params']
    }
    assert set(decay) == _trainable(model)  # frozen tensors are skipped
    wd = cfg.optim_wrapper.optimizer.weight_decay
    assert wd == 5e-2
    for name, value in decay.items():
        zero = name.endswith(('.shift', 'head.fc.bias')) or '.ssf.' in name
        if name.startswith('backbone.patch_embed.norm.'):
            zero = False  # the patch SSF is decayed, its shift included
        assert value == (0. if zero else wd), name
    assert decay['backbone.layers.0.attn.qkv.scale_left'] == wd
    assert decay['backbone.layers.0.attn.qkv.scale_right'] == wd
    assert decay['backbone.layers.0.attn.qkv.shift'] == 0.
    assert decay['backbone.ln1.ssf.scale'] == 0.
    assert decay['backbone.patch_embed.norm.shift'] == wd
    assert decay['head.fc.weight'] == wd
