# Sparse-Tuning (Liu et al., arXiv 2405.14700) on ViT-B/16 IN-21k: the
# released code's model (docs/methods/sparse_tuning.md §1, §2):
# - token keep/fuse: keep rate 0.7 in 0-based blocks 3, 6, 9 (197 -> 140 ->
#   100 -> 72 tokens), ceil rounding, fusing ON (fuse='sum': one
#   unnormalised fused token; the reference CLI's --fuse_token defaults to
#   off, which is fuse='drop', §5.1), no keep-rate warm-up (§5.2);
# - the stage-sum Dense Adapter of the released code (768 -> 64 -> 32,
#   §2a); dense='paper' selects the paper figure's variant (§2b);
# - the adapters start from the released code's effective init: timm's
#   re-init of every nn.Linear, trunc-normal(0.02) weights and zero biases,
#   so they do not output 0 at step 0 (branch_init='reference', §2e);
# - trainable: the adapters (1,314,432) and the head only;
# - head: BatchNorm1d(affine=False, eps 1e-6) + Linear, weight trunc-normal
#   0.01, bias 0 (§2d).
_base_ = ['./vit-b16_in21k.py']

model = dict(
    backbone=dict(
        type='SparseTuningViT',
        keep_rate=0.7,
        keep_layers=(3, 6, 9),
        keep_round='ceil',
        fuse='sum',
        dense='stage_sum',
        adapter_cfg=dict(hidden_dims=64, inner_dims=32),
        branch_init='reference'),
    head=dict(
        type='BNLinearClsHead',
        with_bn=True,
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.01,
                      bias=0.)))
