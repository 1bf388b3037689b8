from .dense_adapter import PaperDenseAdapter, StageSumAdapter
from .rlrr import SSF, RLRRLinear, SSFLayerNorm

__all__ = [
    'PaperDenseAdapter', 'RLRRLinear', 'SSF', 'SSFLayerNorm',
    'StageSumAdapter'
]
