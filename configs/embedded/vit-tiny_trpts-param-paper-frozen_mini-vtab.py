# TR-PTS parameter selection on the embedded tiny ViT with the paper's frozen
# set: position embedding, [CLS] and LayerNorms frozen, every bias trained,
# 5% budget.  The first row of the frozen-set comparison in docs/demo.md §4
# (the demo's own config trains pos-embed/[CLS]/norms and freezes the biases);
# the runner tests build on it because it is the paper's default.
_base_ = ['./vit-tiny_trpts-param_mini-vtab.py']
optim_wrapper = dict(
    eligibility=dict(
        train_norm=False, train_pos_embed=False, train_cls_token=False,
        train_bias=True))
custom_hooks = _base_.custom_hooks
custom_hooks[0].target_ratio = 0.05
