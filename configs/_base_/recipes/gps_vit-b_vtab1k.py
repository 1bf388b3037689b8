# GPS (CVPR 2024) selection rule as a baseline on VTAB-1k, ViT-B/16 IN-21k,
# in the "harmonised" setting of docs/methods/gps.md §5: TR-PTS's data,
# checkpoint and schedule (trpts_vit-b_vtab1k.py without token selection) and
# GPS's allocation -- a uniform K connections per output neuron (`rule='gps'`,
# K per task from the GPS scripts, docs/methods/gps.md §3) -- on the same
# Fisher scores. So the GPS and TR-PTS configs differ only in how the scores
# are turned into a selection (uniform K vs TR-PTS's per-matrix C_l).
#
# Not GPS-faithful (documented deviations): GPS scores with |sum of
# gradients| of a head-free SupCon loss on two augmented views in train
# mode with AMP (docs/methods/gps.md §1); here the TR-PTS Fisher pass scores
# (CE, eval mode, fp32). GPS trains 110 epochs (timm cooldown) on the AugReg
# checkpoint; here 100 epochs on the original ViT-B_16.npz, like TR-PTS.
_base_ = [
    '../default_runtime.py',
    '../datasets/vtab1k.py',
    '../models/vit-b16_in21k.py',
    '../schedules/trpts_adam_cosine.py',
]

custom_hooks = [
    dict(
        type='FisherSelectionHook',
        rule='gps',
        k=1,
        batch_size=32,
        pipeline='test',
        head='random'),
]

default_hooks = dict(logger=dict(interval=10))
