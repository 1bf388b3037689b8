# Sparse-Tuning, ViT-B/16 IN-21k, VTAB-1k SVHN
# (folder `svhn`, 10 classes).  8 GPUs x 8 images = 64 per step:
#   tools/dist_train.sh configs/sparse-tuning/vit-b_vtab1k-svhn.py 8
# Per-task values (the paper publishes no VTAB-1k recipe,
# docs/methods/sparse_tuning.md §3; model and schedule: the recipe base):
#   batch 64 in total (8 GPUs x 8): our default [D] (§3);
#   lr 1e-3: the untuned default of the schedule base -- tune it on
#     train800 -> val200 and set it here.
_base_ = ['../_base_/recipes/sparse-tuning_vit-b_vtab1k.py']

train_dataloader = dict(batch_size=8, dataset=dict(task='svhn'))
val_dataloader = dict(dataset=dict(task='svhn'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=10)
model = dict(head=dict(num_classes=10))
optim_wrapper = dict(optimizer=dict(lr=1e-3))
# The total batch of the lr; `--auto-scale-lr` rescales it for others.
auto_scale_lr = dict(base_batch_size=64)
