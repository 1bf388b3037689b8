# GPS (CVPR 2024) selection rule as a baseline on FGVC, ViT-B/16 IN-21k, in
# the "harmonised" setting of docs/methods/gps.md §5 (see gps_vit-b_vtab1k.py):
# the TR-PTS FGVC recipe (trpts_vit-b_fgvc.py: GPS's augmentation, Mixup 0.8 /
# CutMix 1.0, label smoothing 0.1) without token selection, and GPS's
# uniform K connections per neuron on the TR-PTS Fisher scores.
_base_ = [
    '../default_runtime.py',
    '../datasets/fgvc.py',
    '../models/vit-b16_in21k.py',
    '../schedules/trpts_adam_cosine.py',
    '../models/fgvc_regularisation.py',
]

model = dict(
    head=dict(loss=_base_.fgvc_loss),
    train_cfg=dict(augments=_base_.fgvc_augments))

custom_hooks = [
    dict(
        type='FisherSelectionHook',
        rule='gps',
        k=1,
        batch_size=32,
        pipeline='test',
        head='random'),
]

default_hooks = dict(logger=dict(interval=50))
