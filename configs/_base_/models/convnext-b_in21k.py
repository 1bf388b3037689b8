# ConvNeXt-B (MMPretrain's ConvNeXt v1 arch 'base': depths 3-3-27-3,
# channels 128-256-512-1024, layer scale 1e-6, no GRN) at 224 px,
# pre-trained on ImageNet-21k, for TR-PTS parameter selection
# (docs/methods/trpts.md §12).
#
# Checkpoint: MMPretrain's `convnext-base_3rdparty_in21k` (IN-21k only;
# mmpretrain configs/convnext/metafile.yml), downloaded once by hand
# (nothing is downloaded at run time):
#   https://download.openmmlab.com/mmclassification/v0/convnext/convnext-base_3rdparty_in21k_20220124-13b83eec.pth
# (converted by MMPretrain from the ConvNeXt authors'
#   https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_224.pth).
# The file is a full classifier state dict: `prefix='backbone.'` loads the
# backbone and drops its 21841-class head.
pretrained = 'data/checkpoints/convnext-base_3rdparty_in21k.pth'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ConvNeXt',
        arch='base',
        # MMPretrain's default: the last stage, average-pooled, then norm3
        # (the output is already a [B, 1024] vector: no neck).
        out_indices=-1,
        gap_before_final_norm=True,
        drop_path_rate=0.,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=1024,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        # Never a zero head: the Fisher pass needs gradients through it.
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.)),
)
