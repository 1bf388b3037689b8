# Swin-B (MMPretrain's SwinTransformer arch 'base': embed 128, depths
# 2-2-18-2, heads 4-8-16-32, window 7, patch 4) at 224 px with ImageNet-21k
# pre-training, for TR-PTS parameter selection (docs/methods/trpts.md §12).
#
# Checkpoint: MMPretrain publishes no pure IN-21k Swin-B; the Swin-B with
# IN-21k pre-training in its model zoo is `swin-base_in21k-pre-3rdparty_in1k`
# (IN-21k pre-trained, then IN-1k fine-tuned by the Swin authors;
# mmpretrain configs/swin_transformer/metafile.yml), downloaded once by hand
# (nothing is downloaded at run time):
#   https://download.openmmlab.com/mmclassification/v0/swin-transformer/convert/swin_base_patch4_window7_224_22kto1k-f967f799.pth
# (converted by MMPretrain from the Swin authors'
#   https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224_22kto1k.pth).
# The IN-21k-only weights used by the PEFT literature (swin_base_patch4_
# window7_224_22k.pth from the same release) are not in MMPretrain's zoo;
# loading them needs a key conversion this project does not ship.
# The file is a full classifier state dict: `prefix='backbone.'` loads the
# backbone and drops its 1000-class head.
pretrained = 'data/checkpoints/swin-base_in21k-pre-3rdparty_in1k.pth'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='SwinTransformer',
        arch='base',
        img_size=224,
        drop_rate=0.,
        # MMPretrain's class default is 0.1; 0 as in the ViT-B/16 base, so
        # the per-task drop-path values carry over as they are.
        drop_path_rate=0.,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    # Swin outputs the last stage's feature map: average it (MMPretrain's
    # configs/_base_/models/swin_transformer/base_224.py does the same).
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=1024,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        # Never a zero head: the Fisher pass needs gradients through it.
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.)),
)
