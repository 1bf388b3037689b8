# RLRR (CVPR 2024) on the embedded tiny ViT: every Linear of every block
# rescaled as W * (1 + s_left s_right^T) with a bias shift, SSF after every
# LayerNorm and on the patch embedding; weights, norms, pos_embed and [CLS]
# frozen, the head trained.  RLRR's weight-decay rule and zero head as the
# benchmark configs (configs/_base_/models/rlrr_vit-b16_in21k.py).
# Identity initialisation (step 0 is the pre-trained model), unlike the
# benchmark configs: the reference rescaling bound sqrt(6) * sqrt(6 / in)
# grows as the width shrinks (0.75 at 64 dims, 0.22 in ViT-B).  On the demo's
# orientation task (10 epochs, one seed): identity 59.7 / 70.0 / 62.1 top-1
# at lr 1e-2 / 3e-2 / 1e-1, the reference init 62.0 / 67.5 at 1e-2 / 3e-2.
_base_ = [
    './vit-tiny_full-ft_mini-vtab.py',
    '../_base_/schedules/rlrr_paramwise.py',
]
model = dict(
    backbone=dict(type='RLRRViT', rlrr_init='identity', branch_dropout=0.),
    head=dict(
        init_cfg=dict(
            _delete_=True, type='Constant', layer='Linear', val=0.)))
optim_wrapper = dict(
    optimizer=dict(lr=3e-2, weight_decay=1e-4),
    paramwise_cfg=_base_.rlrr_paramwise_cfg)
