# SPT-LoRA, ViT-B/16 IN-21k, VTAB-1k Oxford Flowers102 (folder
# `oxford_flowers102`, 102 classes).  Stage 1 writes the allocation (0.4M):
#   python tools/compute_sensitivity.py \
#       configs/spt/vit-b-lora_vtab1k-flowers102.py --budget 0.4 \
#       --out data/sensitivity/spt-lora_flowers102_0.4M.pth
# then 8 GPUs x 8 images = 64 per step:
#   tools/dist_train.sh configs/spt/vit-b-lora_vtab1k-flowers102.py 8
# Per-task values: task and classes from the VTAB-1k table
# (mmtrpts/datasets/vtab_tasks.py); budget 0.4M, one of SPT's per-task
# sweep {1.0, 0.8, 0.6, 0.4, 0.2}M (SPT's shipped oxford_flowers102 file at
# 0.4M realises 0.363M, docs/methods/spt.md §1); everything else is SPT's one
# VTAB-1k recipe for all tasks (the base).
_base_ = ['../_base_/recipes/spt_vit-b_vtab1k.py']

train_dataloader = dict(dataset=dict(task='oxford_flowers102'))
val_dataloader = dict(dataset=dict(task='oxford_flowers102'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=102)
model = dict(
    backbone=dict(
        sensitivity_file='data/sensitivity/spt-lora_flowers102_0.4M.pth'),
    head=dict(num_classes=102))
sensitivity_cfg = dict(budget=0.4)
