# GPS rule (uniform K per neuron) baseline, ViT-B/16 IN-21k,
# VTAB-1k smallNORB elevation (structured), 9 classes.
# 8 GPUs x 4 images = 32 per step:
#   tools/dist_train.sh configs/gps/vit-b_vtab1k-smallnorb-ele.py 8
# From the GPS released script for this data set (docs/methods/gps.md §3):
# batch 32 in total, lr 3e-4, drop-path 0.2, K = 1 connections per neuron
# (`times_para`). Harmonised recipe: see the base.
_base_ = ['../_base_/recipes/gps_vit-b_vtab1k.py']

lr = 3e-4
train_dataloader = dict(batch_size=4, dataset=dict(task='smallnorb_ele'))
val_dataloader = dict(dataset=dict(task='smallnorb_ele'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=9)
model = dict(backbone=dict(drop_path_rate=0.2), head=dict(num_classes=9))
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = _base_.param_scheduler
param_scheduler[0].start_factor = 1e-7 / lr  # GPS: warm-up from 1e-7
