# TR-PTS parameter selection (no token selection) on the embedded tiny ViT:
# Fisher pass over train800val200, budget calibrated to 5% of the backbone
# (the tiny ViT's biases alone are 1.1% and one connection per neuron is
# another 1.1%, so ViT-B's 0.34% is out of reach at this size).
_base_ = ['./vit-tiny_full-ft_mini-vtab.py']
optim_wrapper = dict(
    constructor='FisherMaskOptimWrapperConstructor',
    optimizer=dict(type='Adam', lr=1e-2, weight_decay=0.))
custom_hooks = [
    dict(type='FisherSelectionHook', rule='trpts', target_ratio=0.05,
         batch_size=64, pipeline='test', head='random'),
]
