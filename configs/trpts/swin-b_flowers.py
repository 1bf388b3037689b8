# TR-PTS, Swin-B, FGVC Oxford Flowers (102 classes, VPT splits:
# train+val -> test).  8 GPUs x 4 images = 32 per step:
#   tools/dist_train.sh configs/trpts/swin-b_flowers.py 8
# (GPS EMA decay for this data set: 0.99; not used, see the recipe.)
# Parameter selection only: Swin-B has no [CLS] token, so there is
#   no token selection (see the recipe).  Untuned for Swin-B: the
#   batch, lr, drop-path and budget below are carried over as they
#   are, with their sources, from the ViT-B/16 config
#   configs/trpts/vit-b_flowers.py:
# Per-task values (TR-PTS publishes none; docs/methods/trpts.md §9 adopts
#   GPS's): batch 32 in total (8 GPUs x 4), lr 1e-3, drop-path 0.1: the GPS
#     released script for oxford flowers (docs/methods/gps.md §3);
#   budget 0.0060 = 0.60% of the backbone, TR-PTS's FGVC figure
#     (docs/methods/trpts.md §10; per-data-set budgets are not published);
#   100 epochs, GPS FGVC augmentation: the recipe base (docs/methods/trpts.md
#   §9).
_base_ = ['../_base_/recipes/trpts_swin-b_fgvc.py']

lr = 1e-3
train_dataloader = dict(batch_size=4, dataset=dict(dataset='flowers'))
val_dataloader = dict(dataset=dict(dataset='flowers'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=102)
model = dict(backbone=dict(drop_path_rate=0.1), head=dict(num_classes=102))
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = _base_.param_scheduler
param_scheduler[0].start_factor = 1e-7 / lr  # GPS: warm-up from 1e-7
