# The FGVC training regularisation of the released GPS and Sparse-Tuning
# scripts (timm's defaults): Mixup 0.8 or CutMix 1.0, one per batch (timm's
# switch prob 0.5), and label smoothing 0.1; mmpretrain's LabelSmoothLoss on
# the mixed one-hot labels equals timm's SoftTarget CE (both are linear:
# mix * (1 - eps) + eps / C).  A recipe lists this file in `_base_` and sets
#   model = dict(head=dict(loss=_base_.fgvc_loss),
#                train_cfg=dict(augments=_base_.fgvc_augments))
fgvc_loss = dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
fgvc_augments = [dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]
