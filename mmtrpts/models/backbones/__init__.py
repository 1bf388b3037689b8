from .token_keep_fuse_vit import TokenKeepFuseViT

__all__ = ['TokenKeepFuseViT']
