# The generated mini-benchmark (mmtrpts.datasets.synthetic): VTAB-1k layout, 32x32
# images, tasks `counting` (6 classes), `location` (8), `orientation` (8),
# `texture` (6).  Final-run protocol: train on train800val200, test on test.
# tools/demo.py writes the data and sets the task; by hand:
#   --cfg-options train_dataloader.dataset.task=location \
#       val_dataloader.dataset.task=location \
#       test_dataloader.dataset.task=location model.head.num_classes=8 ...
dataset_type = 'VTAB1k'
data_root = '{{ fileDirname }}/../../../.cache/embedded/mini-vtab'
task = 'counting'
num_classes = 6

data_preprocessor = dict(
    num_classes=num_classes,
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    to_rgb=True,
)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32), interpolation='bicubic'),
    dict(type='PackInputs'),
]
test_pipeline = train_pipeline

train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        task=task,
        num_classes=num_classes,
        split='train800val200',
        pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=250,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        task=task,
        num_classes=num_classes,
        split='test',
        test_mode=True,
        pipeline=test_pipeline),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
