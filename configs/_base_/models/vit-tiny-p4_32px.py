# The embedded backbone: a 6-layer, 64-dim ViT on 32x32 images with 4x4
# patches (64 patch tokens + [CLS]).  `make demo` pre-trains it on the
# generated source task (mmtrpts/apis/embedded_backbone.py) and writes the
# checkpoint below; the head is re-initialised for every target task.
pretrained = '{{ fileDirname }}/../../../.cache/embedded/vit-tiny-p4_32px_shapes-pre.pth'  # noqa: E501
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch=dict(
            embed_dims=64, num_layers=6, num_heads=4,
            feedforward_channels=256),
        img_size=32,
        patch_size=4,
        drop_rate=0.,
        drop_path_rate=0.,
        out_type='cls_token',
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=6,
        in_channels=64,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        # Never a zero head: trunc-normal 0.02, zero bias
        # (docs/methods/trpts.md §2).
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.)),
)
