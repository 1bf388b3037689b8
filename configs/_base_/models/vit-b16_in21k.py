# ViT-B/16 pre-trained on ImageNet-21k (original ViT-B_16.npz by default),
# converted once with
#   python tools/model_converters/vit_to_mmpretrain.py ViT-B_16.npz \
#       data/checkpoints/vit-b16_in21k.pth
# (see README "Converting real weights"; nothing is downloaded at run time).
# Benchmark configs override `num_classes` and, for AugReg, the checkpoint.
pretrained = 'data/checkpoints/vit-b16_in21k.pth'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch='b',
        img_size=224,
        patch_size=16,
        drop_rate=0.,
        drop_path_rate=0.,
        out_type='cls_token',
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=768,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        # Never a zero head: the Fisher pass needs gradients through it.
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.)),
)
