# VTAB-1k (NOAH/SSF image files), docs/benchmarks.md section 1.
#
# A task config inherits this file and overrides the task in the three
# dataloaders and num_classes in the preprocessor and head, e.g.
#   train_dataloader = dict(dataset=dict(task='dtd'))
#   val_dataloader = dict(dataset=dict(task='dtd'))
#   test_dataloader = dict(dataset=dict(task='dtd'))
#   data_preprocessor = dict(num_classes=47)
# Final runs train on train800val200 and test on test; for hyper-parameter
# search use split='train800' / split='val200' instead.
dataset_type = 'VTAB1k'

# 0.5 / 0.5 normalisation, the timm default of both IN-21k ViT-B/16
# checkpoints. For ImageNet statistics (SPT) list
# '../_base_/datasets/norm_imagenet.py' in _base_ and add
#   data_preprocessor = _base_.norm_imagenet
# to the child config (mmengine forbids the same key in two bases).
data_preprocessor = dict(
    num_classes=100,
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    # convert the BGR images loaded by cv2 to RGB
    to_rgb=True,
)

# Direct resize to 224 x 224, no augmentation (GPS --direct-resize).
# The pillow backend matches timm's PIL bicubic resize.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='Resize',
        scale=(224, 224),
        interpolation='bicubic',
        backend='pillow'),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='Resize',
        scale=(224, 224),
        interpolation='bicubic',
        backend='pillow'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root='data/vtab-1k',
        task='cifar',
        split='train800val200',
        pipeline=train_pipeline),
)

val_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root='data/vtab-1k',
        task='cifar',
        split='test',
        test_mode=True,
        pipeline=test_pipeline),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
