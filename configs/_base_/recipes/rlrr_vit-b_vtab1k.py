# RLRR (CVPR 2024) on VTAB-1k with ViT-B/16 IN-21k: the settings shared by
# the task configs configs/rlrr/vit-b_vtab1k-<task>.py, which set the task,
# classes, lr, weight decay, branch dropout and flip (docs/methods/rlrr.md §4
# table).
#
# - data: NOAH/SSF image files, train800val200 -> test, Resize((224, 224))
#   bicubic, 0.5 / 0.5, no crop, mixup or label smoothing (plain CE); tasks
#   with `simple_aug` in the reference add a horizontal flip:
#     train_dataloader = dict(dataset=dict(pipeline=_base_.flip_pipeline))
# - model: ../models/rlrr_vit-b16_in21k.py (RLRRViT, the reference's
#   random initialisation and zero head, branch dropout for "drop_path");
# - schedule: ../schedules/rlrr_adamw_cosine.py (AdamW, 110 epochs) with
#   RLRR's weight-decay rule; seed 42 as the reference.  The reference
#   trains with AMP: add --amp to tools/train.py for parity.
#
# Evaluation: on the test split after every epoch, as the reference, which
# reports the best epoch ("max_test", docs/benchmarks.md §4); the log also
# holds the last epoch, and tools/analysis_tools/collect_results.py reports
# both. Set train_cfg.val_interval=10 to evaluate less often.
_base_ = [
    '../default_runtime.py',
    '../datasets/vtab1k.py',
    '../models/rlrr_vit-b16_in21k.py',
    '../schedules/rlrr_adamw_cosine.py',
]

flip_pipeline = [
    *_base_.train_pipeline[:-1],
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    _base_.train_pipeline[-1],
]

randomness = dict(seed=42)
default_hooks = dict(logger=dict(interval=10))
