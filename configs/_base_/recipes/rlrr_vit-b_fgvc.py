# RLRR (CVPR 2024) on FGVC (VPT json splits) with ViT-B/16 IN-21k: the
# settings shared by configs/rlrr/vit-b_<data set>.py, which set the data
# set, classes, lr and branch dropout (docs/methods/rlrr.md §4, the reference
# `train_fgvc.py`).
#
# - data: trainval -> test; train Resize((256, 256)) + RandomCrop 224 +
#   HFlip(0.5), test Resize((256, 256)) + CenterCrop 224 (the paper text
#   says "random resize crop", the code uses RandomCrop); the resize is
#   torchvision's default (bilinear, PIL); 0.5 / 0.5.  RLRR reads Stanford
#   Dogs from the data-set root (folder StanfordDogs, image_subfolder=''),
#   SPT/VPT/GPS from Images/, our default (docs/benchmarks.md §2).
# - model: ../models/rlrr_vit-b16_in21k.py, as rlrr_vit-b_vtab1k.py.
# - schedule: AdamW, weight decay 5e-2 for all five data sets, timm cosine
#   with 50 epochs + 10 cooldown = 60 epochs (warm-up 10 from 1e-7, minimum
#   lr 1e-8, see ../schedules/rlrr_adamw_cosine.py); CUB and Stanford Dogs
#   replace it with warm restarts (their configs).  Seed 42; the reference
#   trains with AMP (--amp).  The augmented RLRR* protocol
#   (`train_fgvc_aug.py`) is not configured here.
#
# Evaluation: on the test split after every epoch (max_test and last, see
# rlrr_vit-b_vtab1k.py).
_base_ = [
    '../default_runtime.py',
    '../datasets/fgvc.py',
    '../models/rlrr_vit-b16_in21k.py',
    '../schedules/rlrr_adamw_cosine.py',
]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), interpolation='bilinear',
         backend='pillow'),
    dict(type='RandomCrop', crop_size=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), interpolation='bilinear',
         backend='pillow'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(weight_decay=5e-2))
param_scheduler = [
    # start_factor * lr = 1e-7 for lr = 1e-3; scale it with lr.
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=10),
    dict(type='CosineAnnealingLR', T_max=40, eta_min=1e-8, by_epoch=True,
         begin=10, end=51),
]
train_cfg = dict(max_epochs=60)

randomness = dict(seed=42)
default_hooks = dict(logger=dict(interval=50))
