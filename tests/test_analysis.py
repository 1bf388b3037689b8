"""FLOPs with attention counted, and parameter accounting."""
import torch
import torch.nn.functional as F
from mmengine.analysis import FlopAnalyzer
from mmpretrain.registry import MODELS

from mmtrpts.analysis import count_flops, count_parameters, sdpa_flop_jit


class _Attention(torch.nn.Module):

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_sdpa_handle_counts_both_matmuls():
    q = torch.zeros(2, 3, 5, 8)
    k = torch.zeros(2, 3, 7, 8)
    v = torch.zeros(2, 3, 7, 4)
    analyzer = FlopAnalyzer(_Attention(), (q, k, v))
    analyzer.set_op_handle('aten::scaled_dot_product_attention',
                           sdpa_flop_jit)
    analyzer.unsupported_ops_warnings(False)
    assert analyzer.total() == 2 * 3 * 5 * 7 * (8 + 4)


def test_vit_b16_flops_match_the_mmpretrain_metafile():
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='VisionTransformer', arch='b', img_size=224,
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
                arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                          feedforward_channels=64), img_size=32,
                patch_size=4, frozen_stages=2),
            head=dict(type='LinearClsHead', num_classes=5, in_channels=32)))
    counts = count_parameters(model)
    assert counts['head'] == 32 * 5 + 5
    assert counts['trainable'] == counts['head']
    assert counts['total'] == counts['backbone_total'] + counts['head']
    backbone = sum(p.numel() for p in model.backbone.parameters())
    assert counts['backbone_total'] == backbone
