# TR-PTS (ICCV 2025) parameter selection on VTAB-1k with Swin-B (IN-21k
# pre-training, see the model base): the settings shared by the 19 task
# configs configs/trpts/swin-b_vtab1k-<task>.py, which set the task,
# classes, batch size, lr, drop-path and budget (see each file).
#
# The ViT-B recipe (trpts_vit-b_vtab1k.py) with the backbone swapped; none of
# it was tuned for Swin-B:
# - data: NOAH/SSF image files, train800val200 -> test, Resize 224, no
#   augmentation (docs/methods/trpts.md §9, GPS --direct-resize --no-aug),
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
# Evaluation: the val loop runs on the *test* split every `val_interval`
# epochs (10 here; set train_cfg.val_interval=1 for the papers' cadence), so
# the log holds the last-epoch top-1 and the best-over-epochs ("max_test",
# docs/benchmarks.md §4).
_base_ = [
    '../default_runtime.py',
    '../datasets/vtab1k.py',
    '../datasets/norm_imagenet.py',
    '../models/swin-b_in21k.py',
    '../schedules/trpts_adam_cosine.py',
]

# ImageNet statistics (the dicts merge: num_classes and to_rgb stay).
data_preprocessor = _base_.norm_imagenet

# The Fisher pass batch is per rank; it does not change the scores' sum.
custom_hooks = [
    dict(
        type='FisherSelectionHook',
        rule='trpts',
        target_ratio=0.0034,
        batch_size=32,
        pipeline='test',
        head='random'),
]

default_hooks = dict(logger=dict(interval=10))
