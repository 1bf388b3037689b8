"""FLOPs with attention counted, and parameter accounting."""
import os.path as osp

import torch
import torch.nn.functional as F
from conftest import PYTHON, REPO, assert_ok, run_tool
from mmengine.analysis import FlopAnalyzer
from mmengine.config import Config
from mmpretrain.registry import MODELS

from mmtrpts.complexity import count_flops, count_parameters, sdpa_flop_jit


class _Attention(torch.nn.Module):

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_sdpa_handle_counts_both_matmuls():
    q = torch.zeros(2, 3, 5, 8)
    k = torch.zeros(2, 3, 7, 8)
    v = torch.zeros(2, 3, 7, 4)
    analyzer = FlopAnalyzer(_Attention(), (q, k, v))
    analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit)
    analyzer.unsupported_ops_warnings(False)
    assert analyzer.total() == 2 * 3 * 5 * 7 * (8 + 4)


def test_vit_b16_flops_match_the_mmpretrain_metafile():
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='VisionTransformer',
                arch='b',
                img_size=224,
                patch_size=16),
            head=dict(type='LinearClsHead', num_classes=1000,
                      in_channels=768)))
    # mmpretrain's metafile value for ViT-B/16 at 224 px.
    assert count_flops(model, backbone_only=True) == 17_581_972_224
    assert count_flops(model) == 17_581_972_224 + 768 * 1000
    assert model.training  # mode restored


def test_count_parameters_with_frozen_backbone():
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='VisionTransformer',
                arch=dict(
                    embed_dims=32,
                    num_layers=2,
                    num_heads=2,
                    feedforward_channels=64),
                img_size=32,
                patch_size=4,
                frozen_stages=2),
            head=dict(type='LinearClsHead', num_classes=5, in_channels=32)))
    counts = count_parameters(model)
    assert counts['head'] == 32 * 5 + 5
    assert counts['trainable'] == counts['head']
    assert counts['total'] == counts['backbone_total'] + counts['head']
    backbone = sum(p.numel() for p in model.backbone.parameters())
    assert counts['backbone_total'] == backbone


def test_get_flops_cli_prints_counts_of_the_built_model():
    config = osp.join(REPO, 'configs', 'embedded',
                      'vit-tiny_trpts_mini-vtab.py')
    proc = run_tool([
        PYTHON,
        osp.join(REPO, 'tools', 'analysis_tools', 'get_flops.py'), config,
        '--cfg-options', 'model.backbone.keep_layers=(1,3)'
    ])
    assert_ok(proc)
    cfg = Config.fromfile(config)
    cfg.model.backbone.keep_layers = (1, 3)
    model = MODELS.build(cfg.model).eval()
    size = cfg.model.backbone.img_size
    flops = count_flops(model, (3, size, size), backbone_only=True)
    params = count_parameters(model)
    assert f'input: 3 x {size} x {size}' in proc.stdout
    assert f'backbone FLOPs: {flops / 1e9:.4f} G' in proc.stdout
    assert f'total {params["total"]:,}, trainable' in proc.stdout
    assert f'head {params["head"]:,},' in proc.stdout
