# ImageNet mean / std (RGB, 0-255 scale), used by SPT.
#
# mmengine does not allow two _base_ files to define the same key, so this
# base cannot redefine data_preprocessor itself. List it after the dataset
# base and merge it in the child config:
#   _base_ = [
#       '../_base_/datasets/vtab1k.py',
#       '../_base_/datasets/norm_imagenet.py',
#       ...
#   ]
#   data_preprocessor = _base_.norm_imagenet
# num_classes and to_rgb of the dataset base are kept (dicts merge).
norm_imagenet = dict(
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
)
