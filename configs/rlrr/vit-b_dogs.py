# RLRR, ViT-B/16 IN-21k, FGVC Stanford Dogs (120 classes, VPT splits:
# trainval -> test).  8 GPUs x 4 images = 32 per step:
#   tools/dist_train.sh configs/rlrr/vit-b_dogs.py 8
# Per-data-set values, the reference `train_fgvc.py` for Stanford Dogs
#   (docs/methods/rlrr.md §4): batch 32 in total (8 GPUs x 4), lr 1e-4, weight
#   decay 5e-2, drop_path 0.0 (= branch_dropout);
#   CUB and Stanford Dogs replace the cosine schedule by
#   CosineAnnealingWarmRestarts(T_0=5, T_mult=1, eta_min=0), without
#   warm-up, over the 60 epochs (50 + 10 cooldown), see below;
#   Resize 256 + RandomCrop 224 + flip: the recipe base.
# Images are read from Images/ (our layout, as SPT, VPT and GPS); the
# reference reads the data-set root: add image_subfolder='' to the three
# dataset dicts to mimic it (docs/methods/rlrr.md §6.8).
# Paper: 92.0 top-1 (RLRR Table 3, best test epoch).
_base_ = ['../_base_/recipes/rlrr_vit-b_fgvc.py']

lr = 1e-4
train_dataloader = dict(batch_size=4, dataset=dict(dataset='dogs'))
val_dataloader = dict(dataset=dict(dataset='dogs'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=120)
model = dict(backbone=dict(branch_dropout=0.0), head=dict(num_classes=120))
optim_wrapper = dict(optimizer=dict(lr=lr))
# The reference steps the warm restarts with `scheduler.step(epoch)` after
# training epoch `epoch`, so epochs 0 and 1 both train at lr and the 5-epoch
# cosines restart at epochs 1, 6, 11, ...: lr x (1, 1, .905, .655, .345,
# .095, 1, .905, ...) (docs/methods/rlrr.md §4).  Hence a 1-epoch first
# period, then 12 periods of 5 (61 >= 60 epochs), each from lr to 0.
param_scheduler = [
    dict(
        type='CosineRestartLR',
        periods=[1] + [5] * 12,
        restart_weights=[1] * 13,
        eta_min=0.,
        by_epoch=True,
        begin=0,
        end=60),
]
