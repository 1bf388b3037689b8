# SPT (He et al., *Sensitivity-Aware Visual Parameter-Efficient
# Fine-Tuning*, ICCV 2023) on VTAB-1k with ViT-B/16 IN-21k: the settings
# shared by configs/spt/vit-b-{lora,adapter}_vtab1k-<task>.py, which set the
# task, classes and allocation file.  From SPT's VTAB-1k script
# (vtab_supervised_spt_lora.sh, docs/methods/spt.md §3):
# - data: train800val200 -> test, Resize((224, 224), bicubic) +
#   CenterCrop 224 (a no-op at this size, kept for parity), ImageNet
#   mean / std although the npz was trained at 0.5 / 0.5 (docs/methods/spt.md
#   §5.6); per-GPU batch 8 for 8 GPUs (SPT's total of 64);
# - model and sensitivity pass: ../models/spt-lora_vit-b16_in21k.py; the
#   pass scores train800 only (SPT's train800.txt), so the allocation never
#   sees val200;
# - optimiser, schedule, evaluation: ../schedules/spt_adamw_cosine.py.
_base_ = [
    '../default_runtime.py',
    '../datasets/vtab1k.py',
    '../datasets/norm_imagenet.py',
    '../models/spt-lora_vit-b16_in21k.py',
    '../schedules/spt_adamw_cosine.py',
]

data_preprocessor = _base_.norm_imagenet
# The base's Resize((224, 224), bicubic) followed by CenterCrop 224.
spt_pipeline = _base_.test_pipeline
spt_pipeline.insert(-1, dict(type='CenterCrop', crop_size=224))
train_dataloader = dict(batch_size=8, dataset=dict(pipeline=spt_pipeline))
val_dataloader = dict(dataset=dict(pipeline=spt_pipeline))
test_dataloader = val_dataloader
sensitivity_cfg = dict(split='train800')

default_hooks = dict(logger=dict(interval=10))
