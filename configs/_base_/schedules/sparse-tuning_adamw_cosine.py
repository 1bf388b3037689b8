# Sparse-Tuning on VTAB-1k / FGVC: our default recipe [D]
# (docs/methods/sparse_tuning.md §3; the released code has no VTAB-1k or FGVC
# recipe): AdamW, 100 epochs, 10-epoch linear warm-up, half-cycle cosine to 0,
# stepped per iteration.
# - weight decay 0: the released code (AdamW over the trainable parameters,
#   weight_decay 0, §3);
# - lr 1e-3 for a total batch of 64: an UNTUNED default (the released code
#   peaks at 5e-4 with batch 512 on complete data sets after its lr
#   overwrite, §5.5); tune it per task on train800 -> val200 (VTAB-1k) or
#   train -> val (FGVC);
# - warm-up from ~0 and min lr 0: the released code's MAE-style schedule
#   (mmengine's LinearLR needs start_factor > 0).
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.),
    clip_grad=None,
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=10,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=10,
         end=100, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=10)
val_cfg = dict()
test_cfg = dict()
# The total batch of the lr above; `--auto-scale-lr` rescales for others.
auto_scale_lr = dict(base_batch_size=64)
