"""Parameter-selection rules (pure torch): TR-PTS, GPS, global top-k."""
from .budget import budget_to_entries, calibrate_trpts, reachable_range
from .rules import (ROUNDINGS, WEIGHTS, SelectionResult, allocate,
                    as_matrix, block_groups, rowwise_topk, select_global_topk,
                    select_gps, select_trpts, topset_size, trpts_connections,
                    validate_scores)

__all__ = [
    'ROUNDINGS', 'WEIGHTS', 'SelectionResult', 'allocate', 'as_matrix',
    'block_groups', 'budget_to_entries', 'calibrate_trpts',
    'reachable_range', 'rowwise_topk', 'select_global_topk', 'select_gps',
    'select_trpts', 'topset_size', 'trpts_connections', 'validate_scores'
]
