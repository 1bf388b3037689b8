# GPS rule (uniform K per neuron) baseline, ViT-B/16 IN-21k,
# VTAB-1k CLEVR distance (structured), 6 classes.
# 8 GPUs x 2 images = 16 per step:
#   tools/dist_train.sh configs/gps/vit-b_vtab1k-clevr-dist.py 8
# From the GPS released script for this data set (docs/methods/gps.md §3):
# batch 16 in total, lr 2e-3, drop-path 0.1, K = 1 connections per neuron
# (`times_para`). Harmonised recipe: see the base.
_base_ = ['../_base_/recipes/gps_vit-b_vtab1k.py']

lr = 2e-3
train_dataloader = dict(batch_size=2, dataset=dict(task='clevr_dist'))
val_dataloader = dict(dataset=dict(task='clevr_dist'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=6)
model = dict(backbone=dict(drop_path_rate=0.1), head=dict(num_classes=6))
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = _base_.param_scheduler
param_scheduler[0].start_factor = 1e-7 / lr  # GPS: warm-up from 1e-7
# The total batch of `lr`; `--auto-scale-lr` rescales lr for other totals.
auto_scale_lr = dict(base_batch_size=16)
