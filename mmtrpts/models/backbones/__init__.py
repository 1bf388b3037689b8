from .rlrr_vit import RLRRViT
from .sparse_tuning_vit import SparseTuningViT
from .spt_vit import SPTViT
from .token_keep_fuse_vit import TokenKeepFuseViT

__all__ = ['RLRRViT', 'SparseTuningViT', 'SPTViT', 'TokenKeepFuseViT']
