# RLRR (CVPR 2024) on ViT-B/16 IN-21k: RLRRViT rescales qkv (one s_right
# per q/k/v slice), proj, fc1 and fc2 of all 12 blocks and adds SSF after
# every LayerNorm and on the patch embedding (docs/methods/rlrr.md §1);
# weights, norms, pos_embed and [CLS] are frozen.  The reference's random
# initialisation (step 0 is not the pretrained model, docs/methods/rlrr.md §2)
# and its zero head.  The reference's "drop_path" is `branch_dropout`
# (element-wise dropout on the residual branches, linspace(0, p, 12));
# mmpretrain's drop_path_rate (stochastic depth) stays 0.  Task configs set
# branch_dropout.
_base_ = ['./vit-b16_in21k.py']

model = dict(
    backbone=dict(
        type='RLRRViT', rlrr_init='reference', branch_dropout=0.1,
        drop_path_rate=0.),
    head=dict(
        init_cfg=dict(
            _delete_=True, type='Constant', layer='Linear', val=0.)))
