# Runtime shared by every mmtrpts config.  Components are registered into
# MMPretrain's registries, so the default scope stays 'mmpretrain'; the
# custom import loads mmtrpts (and its stack fixes) with the config.
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmtrpts'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # MMEngine's CheckpointHook, but a checkpoint file is written under a
    # temporary name and renamed when complete: a killed run never leaves a
    # half-written checkpoint, and --resume continues from the last one.
    checkpoint=dict(type='AtomicCheckpointHook', interval=1,
                    max_keep_ckpts=2, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
    # Fails early, naming both numbers, when the dataset's class count and
    # the head's num_classes disagree.  A default hook (not a custom one)
    # so that method bases may define custom_hooks.
    class_count_check=dict(type='ClassCountCheckHook'),
    # One 'Trainable parameters: a / b (x%)' line for every method (the
    # selection methods log their own count first).
    trainable_params=dict(type='TrainableParamsHook'),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # tools/train.py switches to gloo (and CPU-safe DDP) when CUDA is absent.
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
