"""Tests for the Google ViT ``.npz`` / timm -> MMPretrain converter.

A tiny ViT is written in the real Google ``.npz`` key layout, converted, and
loaded into MMPretrain's ``VisionTransformer`` (and
``VisionTransformerClsHead``).  The MMPretrain output is checked against an
independent forward pass computed directly from the raw JAX arrays.
"""
import math
import re
import subprocess
import sys
from pathlib import Path

import mmtrpts  # noqa: F401  (torchvision fix before mmpretrain)
import numpy as np
import pytest
import torch

from mmtrpts.checkpoints.vit_conversion import (convert_file,
                                                npz_to_mmpretrain,
                                                timm_to_mmpretrain)

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = REPO_ROOT / 'tools' / 'model_converters' / 'vit_to_mmpretrain.py'

DIM, DEPTH, HEADS, PATCH, IMG, MLP, CLASSES = 32, 2, 4, 4, 16, 64, 10
HEAD_DIM = DIM // HEADS
GRID = IMG // PATCH
POS = 'Transformer/posembed_input/pos_embedding'
ATTN = 'MultiHeadDotProductAttention_1/'
EPS = 1e-6


def block(i: int) -> str:
    return f'Transformer/encoderblock_{i}/'


def make_npz_arrays(seed: int = 0) -> dict:
    """Random weights of a tiny ViT in the Google ``.npz`` key layout."""
    rng = np.random.default_rng(seed)

    def rand(*shape, scale=0.2, offset=0.0):
        values = offset + scale * rng.standard_normal(shape)
        return values.astype(np.float32)

    arrays = {
        'cls': rand(1, 1, DIM),
        'embedding/kernel': rand(PATCH, PATCH, 3, DIM),
        'embedding/bias': rand(DIM),
        POS: rand(1, 1 + GRID * GRID, DIM),
        'Transformer/encoder_norm/scale': rand(DIM, offset=1.0),
        'Transformer/encoder_norm/bias': rand(DIM),
        'pre_logits/kernel': rand(DIM, DIM),
        'pre_logits/bias': rand(DIM),
        'head/kernel': rand(DIM, CLASSES),
        'head/bias': rand(CLASSES),
    }
    for i in range(DEPTH):
        b = block(i)
        for ln in ('LayerNorm_0', 'LayerNorm_2'):
            arrays[f'{b}{ln}/scale'] = rand(DIM, offset=1.0)
            arrays[f'{b}{ln}/bias'] = rand(DIM)
        for part in ('query', 'key', 'value'):
            arrays[f'{b}{ATTN}{part}/kernel'] = rand(DIM, HEADS, HEAD_DIM)
            arrays[f'{b}{ATTN}{part}/bias'] = rand(HEADS, HEAD_DIM)
        arrays[f'{b}{ATTN}out/kernel'] = rand(HEADS, HEAD_DIM, DIM)
        arrays[f'{b}{ATTN}out/bias'] = rand(DIM)
        arrays[f'{b}MlpBlock_3/Dense_0/kernel'] = rand(DIM, MLP)
        arrays[f'{b}MlpBlock_3/Dense_0/bias'] = rand(MLP)
        arrays[f'{b}MlpBlock_3/Dense_1/kernel'] = rand(MLP, DIM)
        arrays[f'{b}MlpBlock_3/Dense_1/bias'] = rand(DIM)
    return arrays


def make_timm_state_dict(arrays: dict) -> dict:
    """The same weights under timm's ``VisionTransformer`` names."""

    def t(key):
        return torch.from_numpy(arrays[key].copy())

    def dense(key):
        return t(key + '/kernel').t().contiguous()

    sd = {
        'cls_token': t('cls'),
        'pos_embed': t(POS),
        'patch_embed.proj.weight': t('embedding/kernel').permute(3, 2, 0, 1),
        'patch_embed.proj.bias': t('embedding/bias'),
        'norm.weight': t('Transformer/encoder_norm/scale'),
        'norm.bias': t('Transformer/encoder_norm/bias'),
        'pre_logits.fc.weight': dense('pre_logits'),
        'pre_logits.fc.bias': t('pre_logits/bias'),
        'head.weight': dense('head'),
        'head.bias': t('head/bias'),
    }
    for i in range(DEPTH):
        b, p = block(i), f'blocks.{i}.'
        sd[p + 'norm1.weight'] = t(b + 'LayerNorm_0/scale')
        sd[p + 'norm1.bias'] = t(b + 'LayerNorm_0/bias')
        sd[p + 'attn.qkv.weight'] = torch.cat([
            t(f'{b}{ATTN}{part}/kernel').reshape(DIM, DIM).t()
            for part in ('query', 'key', 'value')
        ])
        sd[p + 'attn.qkv.bias'] = torch.cat([
            t(f'{b}{ATTN}{part}/bias').reshape(DIM)
            for part in ('query', 'key', 'value')
        ])
        sd[p + 'attn.proj.weight'] = t(b + ATTN + 'out/kernel').reshape(
            DIM, DIM).t()
        sd[p + 'attn.proj.bias'] = t(b + ATTN + 'out/bias')
        sd[p + 'norm2.weight'] = t(b + 'LayerNorm_2/scale')
        sd[p + 'norm2.bias'] = t(b + 'LayerNorm_2/bias')
        sd[p + 'mlp.fc1.weight'] = dense(b + 'MlpBlock_3/Dense_0')
        sd[p + 'mlp.fc1.bias'] = t(b + 'MlpBlock_3/Dense_0/bias')
        sd[p + 'mlp.fc2.weight'] = dense(b + 'MlpBlock_3/Dense_1')
        sd[p + 'mlp.fc2.bias'] = t(b + 'MlpBlock_3/Dense_1/bias')
    return {key: value.contiguous() for key, value in sd.items()}


def reference_features(arrays: dict, img: torch.Tensor) -> torch.Tensor:
    """Class-token features of the JAX ViT, straight from the raw arrays.

    Computed in float64 with einsum on the JAX-layout kernels (HWIO patch
    kernel, ``[D, heads, head_dim]`` attention kernels).
    """

    def t(key):
        return torch.from_numpy(arrays[key]).double()

    def layer_norm(x, prefix):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean)**2).mean(-1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + EPS)
        return x * t(prefix + '/scale') + t(prefix + '/bias')

    def gelu(x):
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))

    x = img.double()
    n = x.shape[0]
    patches = x.reshape(n, 3, GRID, PATCH, GRID, PATCH)
    tokens = torch.einsum('bcipjq,pqcd->bijd', patches,
                          t('embedding/kernel')) + t('embedding/bias')
    tokens = tokens.reshape(n, GRID * GRID, DIM)
    x = torch.cat([t('cls').expand(n, -1, -1), tokens], dim=1) + t(POS)
    for i in range(DEPTH):
        b = block(i)
        y = layer_norm(x, b + 'LayerNorm_0')
        q, k, v = (
            torch.einsum('bnd,dhc->bnhc', y, t(f'{b}{ATTN}{part}/kernel')) +
            t(f'{b}{ATTN}{part}/bias') for part in ('query', 'key', 'value'))
        logits = torch.einsum('bqhc,bkhc->bhqk', q, k) / math.sqrt(HEAD_DIM)
        attn = torch.softmax(logits, dim=-1)
        o = torch.einsum('bhqk,bkhc->bqhc', attn, v)
        x = x + torch.einsum(
            'bqhc,hcd->bqd', o,
            t(b + ATTN + 'out/kernel')) + t(b + ATTN + 'out/bias')
        y = layer_norm(x, b + 'LayerNorm_2')
        mlp = b + 'MlpBlock_3/'
        y = gelu(y @ t(mlp + 'Dense_0/kernel') + t(mlp + 'Dense_0/bias'))
        x = x + y @ t(mlp + 'Dense_1/kernel') + t(mlp + 'Dense_1/bias')
    x = layer_norm(x, 'Transformer/encoder_norm')
    return x[:, 0]


def reference_logits(arrays: dict, feats: torch.Tensor) -> torch.Tensor:
    """pre_logits -> tanh -> head, from the raw arrays (float64)."""

    def t(key):
        return torch.from_numpy(arrays[key]).double()

    hidden = torch.tanh(feats @ t('pre_logits/kernel') + t('pre_logits/bias'))
    return hidden @ t('head/kernel') + t('head/bias')


def build_backbone(**kwargs):
    from mmpretrain.models import VisionTransformer
    return VisionTransformer(
        arch=dict(
            embed_dims=DIM,
            num_layers=DEPTH,
            num_heads=HEADS,
            feedforward_channels=MLP),
        img_size=IMG,
        patch_size=PATCH,
        out_type='cls_token',
        drop_rate=0.,
        drop_path_rate=0.,
        **kwargs)


def build_head():
    from mmpretrain.models import VisionTransformerClsHead
    return VisionTransformerClsHead(
        num_classes=CLASSES, in_channels=DIM, hidden_dim=DIM)


def strip(state_dict: dict, prefix: str) -> dict:
    return {
        key[len(prefix):]: value
        for key, value in state_dict.items() if key.startswith(prefix)
    }


@pytest.fixture
def arrays() -> dict:
    return make_npz_arrays()


@pytest.fixture
def npz_file(tmp_path, arrays) -> Path:
    path = tmp_path / 'ViT-tiny.npz'
    np.savez(path, **arrays)
    return path


@pytest.fixture
def img() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, IMG, IMG, generator=generator)


def load_converted(dst: Path) -> dict:
    return torch.load(dst, map_location='cpu', weights_only=True)


def test_npz_backbone_matches_reference(tmp_path, npz_file, arrays, img):
    dst = tmp_path / 'vit_mm.pth'
    summary = convert_file(str(npz_file), str(dst))
    state_dict = load_converted(dst)['state_dict']
    assert all(key.startswith('backbone.') for key in state_dict)

    backbone = build_backbone()
    backbone.load_state_dict(strip(state_dict, 'backbone.'), strict=True)
    backbone.eval()
    with torch.no_grad():
        out = backbone(img)[-1]
    expected = reference_features(arrays, img)
    assert out.shape == (2, DIM)
    assert (out.double() - expected).abs().max().item() < 1e-5

    assert summary['num_tensors'] == len(state_dict) == 4 + 12 * DEPTH + 2
    assert summary['embed_dims'] == DIM
    assert summary['num_layers'] == DEPTH
    assert summary['num_heads'] == HEADS
    assert summary['feedforward_channels'] == MLP
    assert summary['keep_head'] is False


def test_npz_keep_head_matches_reference(tmp_path, npz_file, arrays, img):
    dst = tmp_path / 'vit_mm_head.pth'
    summary = convert_file(str(npz_file), str(dst), keep_head=True)
    state_dict = load_converted(dst)['state_dict']
    assert set(strip(state_dict, 'head.')) == {
        'layers.pre_logits.weight', 'layers.pre_logits.bias',
        'layers.head.weight', 'layers.head.bias'
    }
    assert summary['keep_head'] is True
    assert summary['num_classes'] == CLASSES

    backbone, head = build_backbone(), build_head()
    backbone.load_state_dict(strip(state_dict, 'backbone.'), strict=True)
    head.load_state_dict(strip(state_dict, 'head.'), strict=True)
    backbone.eval()
    head.eval()
    with torch.no_grad():
        logits = head(backbone(img))
    expected = reference_logits(arrays, reference_features(arrays, img))
    assert logits.shape == (2, CLASSES)
    assert (logits.double() - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize('keep_head', [False, True])
def test_timm_matches_npz(arrays, keep_head):
    from_npz = npz_to_mmpretrain(arrays, keep_head=keep_head)
    from_timm = timm_to_mmpretrain(
        make_timm_state_dict(arrays), keep_head=keep_head)
    assert list(from_timm) == list(from_npz)
    for key, value in from_npz.items():
        assert from_timm[key].dtype == value.dtype, key
        assert torch.equal(from_timm[key], value), key


@pytest.mark.parametrize('wrapper', [None, 'state_dict', 'model'])
def test_timm_file(tmp_path, arrays, wrapper):
    sd = make_timm_state_dict(arrays)
    src = tmp_path / 'vit_timm.pth'
    torch.save(sd if wrapper is None else {wrapper: sd}, src)
    dst = tmp_path / 'vit_mm.pth'
    summary = convert_file(str(src), str(dst))
    assert summary['format'] == 'timm'
    assert summary['num_heads'] is None
    converted = load_converted(dst)['state_dict']
    expected = npz_to_mmpretrain(arrays)
    assert list(converted) == list(expected)
    assert all(torch.equal(converted[k], expected[k]) for k in expected)


def test_checkpoint_is_state_dict_only(tmp_path, npz_file):
    dst = tmp_path / 'vit_mm.pth'
    convert_file(str(npz_file), str(dst))
    checkpoint = load_converted(dst)
    assert set(checkpoint) == {'meta', 'state_dict'}
    meta = checkpoint['meta']
    assert meta['format'] == 'npz'
    assert meta['keep_head'] is False
    assert Path(meta['source']).resolve() == npz_file.resolve()
    assert all(
        isinstance(value, torch.Tensor)
        for value in checkpoint['state_dict'].values())


def test_pretrained_init_cfg_with_prefix(tmp_path, npz_file):
    dst = tmp_path / 'vit_mm.pth'
    convert_file(str(npz_file), str(dst), keep_head=True)
    backbone = build_backbone(
        init_cfg=dict(
            type='Pretrained', checkpoint=str(dst), prefix='backbone.'))
    backbone.init_weights()
    expected = strip(load_converted(dst)['state_dict'], 'backbone.')
    actual = backbone.state_dict()
    assert set(actual) == set(expected)
    assert all(torch.equal(actual[k], expected[k]) for k in expected)


def test_missing_key_raises(tmp_path, arrays):
    missing = block(1) + 'MlpBlock_3/Dense_0/bias'
    del arrays[missing]
    src = tmp_path / 'broken.npz'
    np.savez(src, **arrays)
    with pytest.raises(KeyError, match=re.escape(missing)) as info:
        convert_file(str(src), str(tmp_path / 'out.pth'))
    assert str(src) in str(info.value)
    assert not (tmp_path / 'out.pth').exists()


def test_missing_head_with_keep_head_raises(arrays):
    del arrays['head/kernel']
    with pytest.raises(KeyError, match='head/kernel'):
        npz_to_mmpretrain(arrays, keep_head=True)
    # Without keep_head the (partial) head is simply dropped.
    npz_to_mmpretrain(arrays)


def test_leftover_key_raises(tmp_path, arrays):
    arrays['Transformer/encoderblock_0/extra/scale'] = np.ones(DIM, np.float32)
    src = tmp_path / 'extra.npz'
    np.savez(src, **arrays)
    with pytest.raises(ValueError, match='encoderblock_0/extra/scale'):
        convert_file(str(src), str(tmp_path / 'out.pth'))


def test_wrong_shape_raises(arrays):
    key = block(0) + ATTN + 'out/kernel'
    arrays[key] = np.zeros((HEADS, HEAD_DIM, DIM + 1), np.float32)
    with pytest.raises(ValueError, match=re.escape(key)) as info:
        npz_to_mmpretrain(arrays)
    assert str((HEADS, HEAD_DIM, DIM + 1)) in str(info.value)


def test_timm_errors(arrays):
    sd = make_timm_state_dict(arrays)
    sd['fc_norm.weight'] = torch.ones(DIM)
    with pytest.raises(ValueError, match='fc_norm.weight'):
        timm_to_mmpretrain(sd)
    del sd['fc_norm.weight'], sd['blocks.1.attn.qkv.bias']
    with pytest.raises(KeyError, match=re.escape('blocks.1.attn.qkv.bias')):
        timm_to_mmpretrain(sd)


def test_unsupported_suffix(tmp_path):
    src = tmp_path / 'weights.h5'
    src.write_bytes(b'')
    with pytest.raises(ValueError, match='suffix'):
        convert_file(str(src), str(tmp_path / 'out.pth'))


def test_cli(tmp_path, npz_file):
    dst = tmp_path / 'cli_out.pth'
    result = subprocess.run(
        [sys.executable,
         str(CLI),
         str(npz_file),
         str(dst), '--keep-head'],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r'num_tensors\s*: 34', result.stdout), result.stdout
    checkpoint = load_converted(dst)
    assert checkpoint['meta']['keep_head'] is True
    assert 'head.layers.head.weight' in checkpoint['state_dict']
