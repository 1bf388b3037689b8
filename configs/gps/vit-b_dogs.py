# GPS rule (uniform K per neuron) baseline, ViT-B/16 IN-21k, FGVC
# Stanford Dogs, 120 classes.  8 GPUs x 8 images = 64 per step:
#   tools/dist_train.sh configs/gps/vit-b_dogs.py 8
# From the GPS released script for this data set (docs/methods/gps.md §3):
# batch 64 in total, lr 1e-4, drop-path 0, K = 1 connections per neuron
# (`times_para`). Harmonised recipe: see the base.
_base_ = ['../_base_/recipes/gps_vit-b_fgvc.py']

lr = 1e-4
train_dataloader = dict(batch_size=8, dataset=dict(dataset='dogs'))
val_dataloader = dict(dataset=dict(dataset='dogs'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=120)
model = dict(head=dict(num_classes=120))
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = _base_.param_scheduler
param_scheduler[0].start_factor = 1e-7 / lr  # GPS: warm-up from 1e-7
# The total batch of `lr`; `--auto-scale-lr` rescales lr for other totals.
auto_scale_lr = dict(base_batch_size=64)
