# Full fine-tuning of the embedded tiny ViT on one generated task (baseline
# row of the demo table).  Single process, CPU or GPU:
#   python tools/train.py configs/embedded/vit-tiny_full-ft_mini-vtab.py
_base_ = [
    '../_base_/models/vit-tiny-p4_32px.py',
    '../_base_/datasets/mini_vtab.py',
    '../_base_/schedules/adamw_cosine.py',
    '../_base_/default_runtime.py',
]
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=1e-4))
