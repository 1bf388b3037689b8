# Full TR-PTS on the embedded tiny ViT: Fisher parameter selection (5%
# budget) plus [CLS]-attention token keep/fuse with rho = 0.95 (floor,
# normalised fusion) in the 3 blocks whose selected parameters are sparsest
# (co-selection, docs/methods/trpts.md §7).  The placement is chosen after the
# Fisher pass and saved in the backbone's keep_layer_mask buffer.
_base_ = ['./vit-tiny_trpts-param_mini-vtab.py']
model = dict(
    backbone=dict(
        type='TokenKeepFuseViT', keep_rate=0.95, keep_round='floor',
        fuse='norm'))
custom_hooks = _base_.custom_hooks
custom_hooks[0].token_placement = dict(mode='sparse', num_blocks=3)
