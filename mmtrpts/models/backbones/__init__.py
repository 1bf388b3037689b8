from .rlrr_vit import RLRRViT
from .sparse_tuning_vit import SparseTuningViT
from .token_keep_fuse_vit import TokenKeepFuseViT

__all__ = ['RLRRViT', 'SparseTuningViT', 'TokenKeepFuseViT']
