# FGVC with the VPT json splits, docs/benchmarks.md section 2 (GPS transforms).
#
# A data-set config inherits this file and overrides the data set in the
# three dataloaders and num_classes, e.g. for NABirds
#   train_dataloader = dict(dataset=dict(dataset='nabirds'))
#   val_dataloader = dict(dataset=dict(dataset='nabirds'))
#   test_dataloader = dict(dataset=dict(dataset='nabirds'))
#   data_preprocessor = dict(num_classes=555)
# Other codebases' layouts: set folder=... and image_subfolder=... in the
# dataset dicts (see mmtrpts/datasets/fgvc_meta.py).
dataset_type = 'FGVC'

# 0.5 / 0.5 normalisation (GPS, RLRR). For ImageNet statistics (SPT) list
# '../_base_/datasets/norm_imagenet.py' in _base_ and add
#   data_preprocessor = _base_.norm_imagenet
# to the child config (mmengine forbids the same key in two bases).
data_preprocessor = dict(
    num_classes=200,
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    # convert the BGR images loaded by cv2 to RGB
    to_rgb=True,
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.08, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=248,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root='data/fgvc',
        dataset='cub',
        split='trainval',
        pipeline=train_pipeline),
)

val_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root='data/fgvc',
        dataset='cub',
        split='test',
        test_mode=True,
        pipeline=test_pipeline),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
