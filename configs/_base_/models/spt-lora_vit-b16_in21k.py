# SPT-LoRA on ViT-B/16 IN-21k (He et al., ICCV 2023; docs/methods/spt.md
# §1-§2): the model of the SPT recipes.  Two stages: the allocation file named
# by `sensitivity_file` (set per task) is written first by
#   python tools/compute_sensitivity.py CONFIG
# with the pass settings of `sensitivity_cfg`; SPTViT reads it when the
# model is built, before DDP and the optimizer exist.
_base_ = ['./vit-b16_in21k.py']

model = dict(
    backbone=dict(
        type='SPTViT',
        # backbone drop-path 0.1 (linear 0 -> 0.1), docs/methods/spt.md §3
        drop_path_rate=0.1,
        # LoRA (parallel, mergeable) of rank 8; 'adapter' for SPT-Adapter
        structured_type='lora',
        rank=8,
        # structured modules: Dropout 0.1 on the input (none on attn.proj),
        # DropPath 0.1 on the output (docs/methods/spt.md §2)
        module_dropout=0.1,
        module_drop_path=0.1,
        # parity with the reference code (docs/methods/spt.md §2.1): one
        # input-dropout mask shared by a layer's LoRAs (q, k, v), and the
        # branches start from the reference's effective init,
        # trunc-normal(0.02) weights and zero biases (not zero B / up)
        module_dropout_mask='shared',
        branch_init='reference',
        sensitivity_file=None))

# Stage 1 (tools/compute_sensitivity.py, mmtrpts.apis.compute_sensitivity):
# SPT's 16 x 32 = 512 images of the training split in sequential order, the
# head's random trunc-normal init, plain CE (docs/methods/spt.md §1).
# mode='eval' (drop-path off, reproducible) and the test-time transform follow
# our TR-PTS Fisher pass; SPT scored in train mode (mode='train').  `budget` is
# the target in millions of parameters, head excluded: SPT trains every task
# at 1.0, 0.8, 0.6, 0.4 and 0.2M and keeps the best; the configs use 0.4M.
# The allocation's thresholds use alpha = 10 and beta = 5 (docs/methods/spt.md
# §1).
sensitivity_cfg = dict(
    budget=0.4, batch_size=32, max_batches=16, mode='eval', pipeline='test')
