# SPT-LoRA, ViT-B/16 IN-21k, FGVC Stanford Dogs (120 classes, VPT splits:
# train+val -> test).  Stage 1 writes the allocation (0.4M target):
#   python tools/compute_sensitivity.py configs/spt/vit-b-lora_dogs.py \
#       --budget 0.4 --out data/sensitivity/spt-lora_dogs_0.4M.pth
# then 8 GPUs x 8 images = 64 per step:
#   tools/dist_train.sh configs/spt/vit-b-lora_dogs.py 8
# Per-data-set values: data set and classes from the FGVC table
# (mmtrpts/datasets/fgvc_meta.py); budget 0.4M (SPT publishes no FGVC
# budgets or recipe, docs/methods/spt.md §3: 0.4M from its VTAB-1k sweep
# {1.0, 0.8, 0.6, 0.4, 0.2}M); the rest is the recipe base's decision.
_base_ = ['../_base_/recipes/spt_vit-b_fgvc.py']

train_dataloader = dict(dataset=dict(dataset='dogs'))
val_dataloader = dict(dataset=dict(dataset='dogs'))
test_dataloader = val_dataloader
data_preprocessor = dict(num_classes=120)
model = dict(
    backbone=dict(sensitivity_file='data/sensitivity/spt-lora_dogs_0.4M.pth'),
    head=dict(num_classes=120))
sensitivity_cfg = dict(budget=0.4)
