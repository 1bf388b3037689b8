# SPT-LoRA, ViT-B/16 IN-21k, VTAB-1k KITTI distance (folder
# `kitti`, 4 classes).  Stage 1 writes the allocation (0.4M):
#   python tools/compute_sensitivity.py \
#       configs/spt/vit-b-lora_vtab1k-kitti.py --budget 0.4 \
#       --out data/sensitivity/spt-lora_kitti_0.4M.pth
# then 8 GPUs x 8 images = 64 per step:
#   tools/dist_train.sh configs/spt/vit-b-lora_vtab1k-kitti.py 8
# Per-task values: task and classes from the VTAB-1k table
# (mmtrpts/datasets/vtab_tasks.py); budget 0.4M, one of SPT's per-task
# sweep {1.0, 0.8, 0.6, 0.4, 0.2}M (docs/methods/spt.md §3; no shipped file for
# this task is quoted in docs/methods/spt.md); everything else is SPT's one
# VTAB-1k recipe for all tasks (the base).
_base_ = ['../_base_/recipes/spt_vit-b_vtab1k.py']

train_dataloader = dict(dataset=dict(task='kitti'))
val_dataloader = dict(dataset=dict(task='kitti'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=4)
model = dict(
    backbone=dict(sensitivity_file='data/sensitivity/spt-lora_kitti_0.4M.pth'),
    head=dict(num_classes=4))
sensitivity_cfg = dict(budget=0.4)
