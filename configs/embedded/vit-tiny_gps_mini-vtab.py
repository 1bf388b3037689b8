# GPS's selection rule (uniform K = 1 connection per output neuron,
# docs/methods/gps.md §1) on the TR-PTS Fisher scores, embedded tiny ViT: the
# allocation baseline of TR-PTS's per-matrix C_l
# (vit-tiny_trpts-param_mini-vtab.py differs only in the rule and its budget).
_base_ = ['./vit-tiny_trpts-param_mini-vtab.py']
custom_hooks = [
    dict(type='FisherSelectionHook', rule='gps', k=1, batch_size=64,
         pipeline='test', head='random'),
]
