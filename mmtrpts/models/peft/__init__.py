from .dense_adapter import PaperDenseAdapter, StageSumAdapter
from .rlrr import SSF, RLRRLinear, SSFLayerNorm
from .spt_modules import SPTAdapter, SPTLinear, SPTLoRA

__all__ = [
    'PaperDenseAdapter', 'RLRRLinear', 'SPTAdapter', 'SPTLinear', 'SPTLoRA',
    'SSF', 'SSFLayerNorm', 'StageSumAdapter'
]
