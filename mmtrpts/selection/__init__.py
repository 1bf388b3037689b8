"""Parameter selection, the maths (pure torch; no mmengine runner code).

- :mod:`.fisher`: the diagonal empirical Fisher accumulator;
- :mod:`.eligibility`: which tensors are masked / trained densely / frozen;
- :mod:`.topk`: score checks, k-th largest, per-row top-k;
- :mod:`.trpts` + :mod:`.trpts_calibration`: the TR-PTS rule and the
  search of M / C_min for a budget; :mod:`.gps`, :mod:`.global_topk`;
- :mod:`.budget`: what a trainable fraction means in entries;
- :mod:`.selector`: scores -> rule -> budget -> record, one home;
- :mod:`.record`: the result type and the record format, defined once;
- :mod:`.placement`: parameter-token co-selection of blocks;
- :mod:`.spt_allocation`: SPT's structured / unstructured allocation;
- :mod:`.report`: the log table and JSON summary of a record.
"""
from .budget import budget_to_entries, parameter_budget
from .global_topk import select_global_topk
from .gps import select_gps
from .record import SelectionResult, build_record, validate_record
from .selector import RULES, ParameterSelector
from .topk import as_matrix, rowwise_topk, topset_size, validate_scores
from .trpts import (ROUNDINGS, WEIGHTS, allocate, block_groups, select_trpts,
                    trpts_connections)
from .trpts_calibration import calibrate_trpts, reachable_range

__all__ = [
    'ROUNDINGS', 'RULES', 'WEIGHTS', 'ParameterSelector', 'SelectionResult',
    'allocate', 'as_matrix', 'block_groups', 'budget_to_entries',
    'build_record', 'calibrate_trpts', 'parameter_budget', 'reachable_range',
    'rowwise_topk', 'select_global_topk', 'select_gps', 'select_trpts',
    'topset_size', 'trpts_connections', 'validate_record', 'validate_scores'
]
