# GPS rule (uniform K per neuron) baseline, ViT-B/16 IN-21k, FGVC
# Oxford Flowers, 102 classes.  8 GPUs x 4 images = 32 per step:
#   tools/dist_train.sh configs/gps/vit-b_flowers.py 8
# From the GPS released script for this data set (docs/methods/gps.md §3):
# batch 32 in total, lr 1e-3, drop-path 0.1, K = 1 connections per neuron
# (`times_para`). Harmonised recipe: see the base.
_base_ = ['../_base_/recipes/gps_vit-b_fgvc.py']

lr = 1e-3
train_dataloader = dict(batch_size=4, dataset=dict(dataset='flowers'))
val_dataloader = dict(dataset=dict(dataset='flowers'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=102)
model = dict(backbone=dict(drop_path_rate=0.1), head=dict(num_classes=102))
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = _base_.param_scheduler
param_scheduler[0].start_factor = 1e-7 / lr  # GPS: warm-up from 1e-7
