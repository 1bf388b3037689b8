# RLRR, ViT-B/16 IN-21k, FGVC Stanford Cars (196 classes, VPT splits:
# trainval -> test).  8 GPUs x 4 images = 32 per step:
#   tools/dist_train.sh configs/rlrr/vit-b_cars.py 8
# Per-data-set values, the reference `train_fgvc.py` for Cars
#   (docs/methods/rlrr.md §4): batch 32 in total (8 GPUs x 4), lr 3e-3, weight
#   decay 5e-2, drop_path 0.2 (= branch_dropout);
#   timm cosine over 50 epochs + 10 cooldown = 60, warm-up from 1e-7,
#   minimum lr 1e-8: the recipe base;
#   Resize 256 + RandomCrop 224 + flip: the recipe base.
# Paper: 87.0 top-1 (RLRR Table 3, best test epoch).
_base_ = ['../_base_/recipes/rlrr_vit-b_fgvc.py']

lr = 3e-3
train_dataloader = dict(batch_size=4, dataset=dict(dataset='cars'))
val_dataloader = dict(dataset=dict(dataset='cars'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=196)
model = dict(backbone=dict(branch_dropout=0.2), head=dict(num_classes=196))
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = _base_.param_scheduler
param_scheduler[0].start_factor = 1e-7 / lr  # warm-up from 1e-7
