# SPT's VTAB-1k optimisation (vtab_supervised_spt_lora.sh, docs/methods/spt.md
# §3), used by both SPT recipes:
# - AdamW lr 1e-3, wd 1e-4 except 1-D tensors, biases, cls_token, pos_embed
#   and the tensors holding unstructured entries (SPT trains those as 1-D
#   sparse deltas, so wd 0); LoRA / Adapter matrices and the head weight
#   keep 1e-4.  The masked wrapper updates only the selected entries of
#   partially trained tensors, so decay never touches a frozen entry;
# - 100 epochs, warm-up 10 epochs from 1e-6, cosine to 1e-5, stepped per
#   epoch.  timm evaluates the cosine at the absolute epoch of a 100-epoch
#   cycle; mmengine's runs over the 90 post-warm-up epochs (at most 9.5% of
#   the peak lr apart, equal at both ends);
# - evaluation every 10 epochs and every epoch of the last 10 (SPT reports
#   the best of these, "max test"; the log also has the last epoch,
#   docs/methods/spt.md §5.5).
optim_wrapper = dict(
    constructor='SPTOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={
            'cls_token': dict(decay_mult=0.),
            'pos_embed': dict(decay_mult=0.),
            # tensors holding unstructured entries (the structured modules
            # are named `...spt_lora...` / `...spt_adapter...`)
            'attn.qkv.weight': dict(decay_mult=0.),
            'attn.proj.weight': dict(decay_mult=0.),
            'ffn.layers.0.0.weight': dict(decay_mult=0.),
            'ffn.layers.1.weight': dict(decay_mult=0.),
        }),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 1e-3, by_epoch=True, begin=0,
         end=10),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=10,
         end=100),
]
train_cfg = dict(
    by_epoch=True, max_epochs=100, val_interval=10,
    dynamic_intervals=[(91, 1)])
val_cfg = dict()
test_cfg = dict()
# SPT's total batch of 64 (8 GPUs x 8); `--auto-scale-lr` rescales lr for
# other totals.
auto_scale_lr = dict(base_batch_size=64)
