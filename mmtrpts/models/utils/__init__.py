from .token_keep_fuse import (KeepFuseResult, cls_attention, keep_fuse,
                              num_kept)

__all__ = ['KeepFuseResult', 'cls_attention', 'keep_fuse', 'num_kept']
