# GPS rule (uniform K per neuron) baseline, ViT-B/16 IN-21k,
# VTAB-1k Diabetic Retinopathy (specialized), 5 classes.
# 8 GPUs x 4 images = 32 per step:
#   tools/dist_train.sh configs/gps/vit-b_vtab1k-retinopathy.py 8
# From the GPS released script for this data set (docs/methods/gps.md §3):
# batch 32 in total, lr 2e-3, drop-path 0.2, K = 1 connections per neuron
# (`times_para`). Harmonised recipe: see the base.
_base_ = ['../_base_/recipes/gps_vit-b_vtab1k.py']

lr = 2e-3
train_dataloader = dict(
    batch_size=4, dataset=dict(task='diabetic_retinopathy'))
val_dataloader = dict(dataset=dict(task='diabetic_retinopathy'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=5)
model = dict(backbone=dict(drop_path_rate=0.2), head=dict(num_classes=5))
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = _base_.param_scheduler
param_scheduler[0].start_factor = 1e-7 / lr  # GPS: warm-up from 1e-7
