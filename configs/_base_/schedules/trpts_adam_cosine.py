# The TR-PTS training schedule (docs/methods/trpts.md §9, which follows GPS):
# Adam without weight decay, 10-epoch linear warm-up from ~1e-7, cosine decay
# to 1e-8, 100 epochs.  Per-dataset configs set lr and batch size; the recipes
# (configs/_base_/recipes/) add FisherSelectionHook with the budget
# (target_ratio: 0.0034 VTAB-1k, 0.0060 FGVC).
#
# The constructor holds every Linear/Conv weight outside the head as a
# masking candidate; FisherSelectionHook scores them with the Fisher
# information before the first iteration and arms the wrapper, which from
# then on updates only the selected entries (biases and head: densely).
optim_wrapper = dict(
    constructor='FisherMaskOptimWrapperConstructor',
    optimizer=dict(type='Adam', lr=1e-3, weight_decay=0.),
    # eligibility=dict(train_norm=False, train_bias=True,
    #                  train_cls_token=False, frozen_keys=[...]),
)
param_scheduler = [
    # start_factor * lr = 1e-7 for lr = 1e-3; scale it with lr.
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=10,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-8, by_epoch=True, begin=10,
         end=100, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=10)
val_cfg = dict()
test_cfg = dict()
# The total batch of `lr`; `--auto-scale-lr` rescales lr for other totals.
auto_scale_lr = dict(base_batch_size=32)
