# SPT-Adapter, ViT-B/16 IN-21k, VTAB-1k dSprites location (folder
# `dsprites_loc`, 16 classes): the LoRA config with Adapters of rank 8
# (sequential on the layer output, parallel on attn.proj; not mergeable).  The
# thresholds depend on the module type, so the allocation is computed for
# Adapters (SPT's adapter script loads the LoRA file, docs/methods/spt.md
# §5.3):
#   python tools/compute_sensitivity.py \
#       configs/spt/vit-b-adapter_vtab1k-dsprites-loc.py --budget 0.4 \
#       --type adapter --out data/sensitivity/spt-adapter_dsprites-loc_0.4M.pth
# then 8 GPUs x 8 images = 64 per step:
#   tools/dist_train.sh configs/spt/vit-b-adapter_vtab1k-dsprites-loc.py 8
# Per-task values as in vit-b-lora_vtab1k-dsprites-loc.py.
_base_ = ['./vit-b-lora_vtab1k-dsprites-loc.py']

model = dict(
    backbone=dict(
        structured_type='adapter',
        sensitivity_file='data/sensitivity/spt-adapter_dsprites-loc_0.4M.pth'))
