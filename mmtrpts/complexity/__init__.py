"""Counters: parameters by role and FLOPs with attention counted."""
from .flops import count_flops, sdpa_flop_jit
from .params import count_parameters

__all__ = ['count_flops', 'count_parameters', 'sdpa_flop_jit']
