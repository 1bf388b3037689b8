# RLRR's schedule on VTAB-1k (docs/methods/rlrr.md §4, the reference
# `train_vtab.py`): AdamW and timm's cosine scheduler with `--epochs 100
# --warmup_epochs 10 --cooldown_epochs 10`, stepped per epoch: a 10-epoch
# linear warm-up from 1e-7, cosine decay to the minimum lr 1e-8 at epoch 100,
# then 10 cooldown epochs at 1e-8, so 110 epochs.  Task configs set lr (and
# start_factor = 1e-7 / lr) and the weight decay.
#
# Two mmengine/timm differences, at most 10% of the peak lr apart: mmengine's
# LinearLR reaches the peak at epoch 9 (timm: 0.9 x peak), and its cosine
# starts its phase after the warm-up, (t - 10) / 90, where timm's keeps
# t / 100 from epoch 0 (epoch 55: 0.50 vs 0.42 x peak).
_base_ = ['./rlrr_paramwise.py']

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=5e-5),
    paramwise_cfg=_base_.rlrr_paramwise_cfg,
)
param_scheduler = [
    # start_factor * lr = 1e-7 for lr = 1e-3; scale it with lr.
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=10),
    # end=101: the step into epoch 100 lands on eta_min, which then holds
    # for the cooldown epochs (no scheduler is active after `end`).
    dict(type='CosineAnnealingLR', T_max=90, eta_min=1e-8, by_epoch=True,
         begin=10, end=101),
]
train_cfg = dict(by_epoch=True, max_epochs=110, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=32)
