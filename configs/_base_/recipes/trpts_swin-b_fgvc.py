# TR-PTS (ICCV 2025) parameter selection on FGVC (VPT json splits) with
# Swin-B (IN-21k pre-training, see the model base): the settings shared by
# configs/trpts/swin-b_{cub,nabirds,flowers,dogs,cars}.py, which set the
# data set, classes, batch size, lr, drop-path and budget.
#
# The ViT-B recipe (trpts_vit-b_fgvc.py) with the backbone swapped; none of
# it was tuned for Swin-B:
# - data: GPS's FGVC recipe (docs/methods/trpts.md §9): RandomResizedCrop(224,
#   0.08-1) + flip, Resize 248 + CenterCrop 224 for test, Mixup 0.8 / CutMix
#   1.0 and label smoothing 0.1 (configs/_base_/models/fgvc_regularisation.py),
#   but ImageNet mean / std instead of 0.5 / 0.5: the statistics Swin-B was
#   pre-trained with, as in MMPretrain's configs/swin_transformer
#   (docs/methods/trpts.md §12);
# - model: MMPretrain's SwinTransformer arch 'base', 224 px, window 7
#   (configs/_base_/models/swin-b_in21k.py);
# - schedule: Adam, wd 0, 10-epoch warm-up, cosine to 1e-8, 100 epochs;
# - FisherSelectionHook: Fisher pass over the training split before the
#   first iteration, the TR-PTS rule calibrated to `target_ratio`.
#   Parameter selection only: no `token_placement`, since Swin has no [CLS]
#   token to score tokens with (the hook refuses it). Eligibility
#   (docs/methods/trpts.md §12): every Linear/Conv weight -- window-attention
#   qkv/proj, MLPs, patch-merging reductions, patch embedding -- is masked
#   per output row; biases and the head are trained densely; LayerNorms and
#   the relative position bias tables are frozen.
#
# Evaluation on the test split every `val_interval` epochs (last-epoch and
# best-over-epochs top-1, see trpts_vit-b_vtab1k.py).
_base_ = [
    '../default_runtime.py',
    '../datasets/fgvc.py',
    '../datasets/norm_imagenet.py',
    '../models/swin-b_in21k.py',
    '../schedules/trpts_adam_cosine.py',
    '../models/fgvc_regularisation.py',
]

# ImageNet statistics (the dicts merge: num_classes and to_rgb stay).
data_preprocessor = _base_.norm_imagenet

model = dict(
    head=dict(loss=_base_.fgvc_loss),
    train_cfg=dict(augments=_base_.fgvc_augments))

custom_hooks = [
    dict(
        type='FisherSelectionHook',
        rule='trpts',
        target_ratio=0.0060,
        batch_size=32,
        pipeline='test',
        head='random'),
]

default_hooks = dict(logger=dict(interval=50))
