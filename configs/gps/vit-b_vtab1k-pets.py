# GPS rule (uniform K per neuron) baseline, ViT-B/16 IN-21k,
# VTAB-1k Oxford-IIIT Pets (natural), 37 classes.
# 8 GPUs x 4 images = 32 per step:
#   tools/dist_train.sh configs/gps/vit-b_vtab1k-pets.py 8
# From the GPS released script for this data set (docs/methods/gps.md §3):
# batch 32 in total, lr 3e-3, drop-path 0, K = 1 connections per neuron
# (`times_para`). Harmonised recipe: see the base.
_base_ = ['../_base_/recipes/gps_vit-b_vtab1k.py']

lr = 3e-3
train_dataloader = dict(batch_size=4, dataset=dict(task='oxford_iiit_pet'))
val_dataloader = dict(dataset=dict(task='oxford_iiit_pet'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=37)
model = dict(head=dict(num_classes=37))
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = _base_.param_scheduler
param_scheduler[0].start_factor = 1e-7 / lr  # GPS: warm-up from 1e-7
