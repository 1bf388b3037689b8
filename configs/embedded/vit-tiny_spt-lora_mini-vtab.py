# SPT-LoRA (He et al., ICCV 2023) on the embedded tiny ViT: the demo row.
# Two stages per task -- the allocation of the task is written first, then
# SPTViT reads it when the model is built:
#   python tools/compute_sensitivity.py \
#       configs/embedded/vit-tiny_spt-lora_mini-vtab.py
#   python tools/train.py configs/embedded/vit-tiny_spt-lora_mini-vtab.py
# (task `counting` of mini_vtab.py).  For another task, from Python:
#   cfg = Config.fromfile(<this file>)
#   set_task(cfg, 'location', 8, data_root=...)     # mmtrpts.apis
#   compute_sensitivity(cfg, out='work_dirs/spt-location.pth')
#   Runner.from_cfg(cfg).train()  # compute_sensitivity set the file
# SPT's optimiser (AdamW, wd exceptions, ../_base_/schedules/
# spt_adamw_cosine.py) over the demo's 10-epoch schedule, lr 3e-3 (better
# than 1e-2 on location and orientation); LoRA of rank 8 as on ViT-B.
# Budget 0.015M parameters (~5% of the tiny backbone, the TR-PTS rows'
# share: a rank-8 LoRA is 25% of a 64 x 64 matrix, so ViT-B's 0.4M = 0.47%
# is out of reach at this size); the sweep steps by 200 entries.
_base_ = [
    '../_base_/models/vit-tiny-p4_32px.py',
    '../_base_/datasets/mini_vtab.py',
    '../_base_/schedules/spt_adamw_cosine.py',
    '../_base_/default_runtime.py',
]
model = dict(
    backbone=dict(
        type='SPTViT',
        structured_type='lora',
        rank=8,
        module_dropout=0.1,
        module_drop_path=0.1,
        sensitivity_file='{{ fileDirname }}/../../.cache/embedded/'
        'sensitivity/spt-lora_counting.pth'))
sensitivity_cfg = dict(
    budget=0.015, batch_size=32, max_batches=16, tau_step=200,
    tau_max=100_000)
optim_wrapper = dict(optimizer=dict(lr=3e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=1,
         convert_to_iter_based=True),
]
train_cfg = dict(_delete_=True, by_epoch=True, max_epochs=10, val_interval=10)
