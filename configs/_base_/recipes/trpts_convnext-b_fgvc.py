# TR-PTS (ICCV 2025) parameter selection on FGVC (VPT json splits) with
# ConvNeXt-B (IN-21k): the settings shared by
# configs/trpts/convnext-b_{cub,nabirds,flowers,dogs,cars}.py, which set the
# data set, classes, batch size, lr, drop-path and budget.
#
# The ViT-B recipe (trpts_vit-b_fgvc.py) with the backbone swapped; none of
# it was tuned for ConvNeXt-B:
# - data: GPS's FGVC recipe (docs/methods/trpts.md §9): RandomResizedCrop(224,
#   0.08-1) + flip, Resize 248 + CenterCrop 224 for test, Mixup 0.8 / CutMix
#   1.0 and label smoothing 0.1 (configs/_base_/models/fgvc_regularisation.py),
#   but ImageNet mean / std instead of 0.5 / 0.5: the statistics ConvNeXt-B
#   was pre-trained with, as in MMPretrain's configs/convnext
#   (docs/methods/trpts.md §12);
# - model: MMPretrain's ConvNeXt v1 arch 'base', 224 px
#   (configs/_base_/models/convnext-b_in21k.py);
# - schedule: Adam, wd 0, 10-epoch warm-up, cosine to 1e-8, 100 epochs;
# - FisherSelectionHook: Fisher pass over the training split before the
#   first iteration, the TR-PTS rule calibrated to `target_ratio`.
#   Parameter selection only: no `token_placement`, since ConvNeXt has no
#   [CLS] token (nor attention) to score tokens with (the hook refuses it).
#   Eligibility (docs/methods/trpts.md §12): every Linear/Conv weight --
#   stem, downsampling, depthwise 7x7 (one row of 49 taps per channel) and
#   pointwise layers -- is masked per output row; biases, the layer scale
#   `gamma` and the head are trained densely; LayerNorms are frozen.
#
# Evaluation on the test split every `val_interval` epochs (last-epoch and
# best-over-epochs top-1, see trpts_vit-b_vtab1k.py).
_base_ = [
    '../default_runtime.py',
    '../datasets/fgvc.py',
    '../datasets/norm_imagenet.py',
    '../models/convnext-b_in21k.py',
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
