# TR-PTS (ICCV 2025) on VTAB-1k with ViT-B/16 IN-21k: the settings shared by
# the 19 task configs in configs/trpts/vit-b_vtab1k-<task>.py, which set the
# task, classes, batch size, lr, drop-path and budget (see each file).
#
# - data: NOAH/SSF image files, train800val200 -> test, Resize 224, no
#   augmentation (docs/methods/trpts.md §9, GPS --direct-resize --no-aug), 0.5
#   / 0.5;
# - model: TokenKeepFuseViT (MMPretrain's VisionTransformer plus [CLS]-
#   attention keep/fuse), rho = 0.95, floor rounding, normalised fusion
#   (docs/methods/trpts.md §6); which blocks select is decided after the Fisher
#   pass;
# - schedule: Adam, wd 0, 10-epoch warm-up, cosine to 1e-8, 100 epochs;
# - FisherSelectionHook: Fisher pass over the training split before the
#   first iteration, the TR-PTS rule calibrated to `target_ratio`, token
#   selection in the 3 blocks with the sparsest selected parameters.
#
# Evaluation: the val loop runs on the *test* split every `val_interval`
# epochs (10 here; GPS / RLRR evaluated every epoch: set
# train_cfg.val_interval=1 for that cadence), so the log holds the last-
# epoch top-1 and the best-over-epochs ("max_test", the papers' protocol,
# docs/benchmarks.md §4); tools/analysis_tools/collect_results.py reports both.
_base_ = [
    '../default_runtime.py',
    '../datasets/vtab1k.py',
    '../models/vit-b16_in21k.py',
    '../schedules/trpts_adam_cosine.py',
]

model = dict(
    backbone=dict(
        type='TokenKeepFuseViT',
        keep_rate=0.95,
        keep_round='floor',
        fuse='norm',
        # placed by FisherSelectionHook(token_placement=...) below
        keep_layers=()))

# The Fisher pass batch is per rank; it does not change the scores' sum.
custom_hooks = [
    dict(
        type='FisherSelectionHook',
        rule='trpts',
        target_ratio=0.0034,
        batch_size=32,
        pipeline='test',
        head='random',
        token_placement=dict(mode='sparse', num_blocks=3)),
]

default_hooks = dict(logger=dict(interval=10))
