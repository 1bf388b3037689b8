# RLRR's weight-decay rule (docs/methods/rlrr.md §6.10) for mmengine's
# DefaultOptimWrapperConstructor.  The reference zeroes the decay of names
# containing `bias` or `norm`, which covers the RLRR bias shifts f and the
# SSFs after LayerNorms; s_left, s_right, the patch-embedding SSF and the
# head weight are decayed.  Our names (RLRRViT): `*.shift` is f (and SSF
# shifts), `*.ssf.*` the LayerNorm SSFs, `patch_embed.norm.*` the patch SSF;
# the longest matching key wins.  Frozen tensors are skipped (mmengine logs
# one line per frozen tensor).  Used as
#   optim_wrapper = dict(paramwise_cfg=_base_.rlrr_paramwise_cfg)
rlrr_paramwise_cfg = dict(
    bias_decay_mult=0.,
    custom_keys={
        '.shift': dict(decay_mult=0.),
        '.ssf.': dict(decay_mult=0.),
        'patch_embed.norm.': dict(decay_mult=1.),
    })
