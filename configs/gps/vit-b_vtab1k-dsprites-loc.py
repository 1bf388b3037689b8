# GPS rule (uniform K per neuron) baseline, ViT-B/16 IN-21k,
# VTAB-1k dSprites location (structured), 16 classes.
# 8 GPUs x 4 images = 32 per step:
#   tools/dist_train.sh configs/gps/vit-b_vtab1k-dsprites-loc.py 8
# From the GPS released script for this data set (docs/methods/gps.md §3):
# batch 32 in total, lr 7e-3, drop-path 0, K = 1 connections per neuron
# (`times_para`). Harmonised recipe: see the base.
_base_ = ['../_base_/recipes/gps_vit-b_vtab1k.py']

lr = 7e-3
train_dataloader = dict(batch_size=4, dataset=dict(task='dsprites_loc'))
val_dataloader = dict(dataset=dict(task='dsprites_loc'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=16)
model = dict(head=dict(num_classes=16))
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = _base_.param_scheduler
param_scheduler[0].start_factor = 1e-7 / lr  # GPS: warm-up from 1e-7
