"""Checkpoint files of mmtrpts (pure torch).

One home for every operation on checkpoint files: converting published ViT
weights to MMPretrain's keys (:mod:`.vit_conversion`), sparse delta
checkpoints of a selection run (:mod:`.delta`), and folding a method's
trained parameters into a plain ``VisionTransformer`` checkpoint
(:mod:`.merge`: deltas, RLRR, SPT-LoRA).
"""
from .delta import (DELTA_FORMAT, DELTA_VERSION, apply_delta, check_plain,
                    delta_size_report, is_delta, make_delta, merged_meta)
from .merge_rlrr import merge_rlrr_state_dict
from .merge_spt import merge_spt_lora

__all__ = [
    'DELTA_FORMAT', 'DELTA_VERSION', 'apply_delta', 'check_plain',
    'delta_size_report', 'is_delta', 'make_delta', 'merge_rlrr_state_dict',
    'merge_spt_lora', 'merged_meta'
]
