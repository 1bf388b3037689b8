from .flops import count_flops, sdpa_flop_jit
from .params import count_parameters

__all__ = ['count_flops', 'sdpa_flop_jit', 'count_parameters']
