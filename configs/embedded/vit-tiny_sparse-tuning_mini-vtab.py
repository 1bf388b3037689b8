# Sparse-Tuning (Liu et al., arXiv 2405.14700) on the embedded tiny ViT
# (6 layers, 64 dims, 32 px / 4 px patches: 65 tokens): the backbone is
# frozen, only the Dense Adapters and the head train.
# - token keep/fuse as the released code (keep rate 0.7, ceil, fusing ON
#   with an unnormalised fused token) in blocks 1, 3, 5 -- every second
#   block, as ViT-B's 3, 6, 9 is every third: 65 -> 47 -> 34 -> 25 tokens;
# - stage-sum Dense Adapter 64 -> 16 -> 8 (ViT-B's 768 -> 64 -> 32 scaled
#   to the narrower model keeping hidden = 2 x inner; a 12x bottleneck
#   would leave 5 channels): the embeddings + DA0 are re-added at block 0,
#   DA1 + DA2 at block 2, DA3 + DA4 at block 4, nothing at block 5 (DA5 is
#   the last adapter, left out as in the reference);
# - BatchNorm + Linear head (trunc-normal 0.01);
# - AdamW, wd 0 as in the released code, lr 1e-2 (adapters and head only;
#   demo task `orientation`, pre-trained tiny ViT: top-1 48.8 at 3e-3,
#   52.0 at 1e-2, chance at 3e-2); the base's 10 epochs, 1 warm-up, cosine.
_base_ = ['./vit-tiny_full-ft_mini-vtab.py']
model = dict(
    backbone=dict(
        type='SparseTuningViT', keep_rate=0.7, keep_layers=(1, 3, 5),
        keep_round='ceil', fuse='sum', dense='stage_sum',
        adapter_cfg=dict(hidden_dims=16, inner_dims=8)),
    head=dict(
        type='BNLinearClsHead', with_bn=True,
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.01,
                      bias=0.)))
optim_wrapper = dict(optimizer=dict(lr=1e-2, weight_decay=0.))
