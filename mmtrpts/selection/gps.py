"""GPS selection: a uniform number of connections per neuron (pure torch).

GPS (Zhang et al., *Gradient-based Parameter Selection for Efficient
Fine-Tuning*, CVPR 2024, arXiv 2312.10136) keeps the top-``K`` entries of
every row of every eligible matrix (docs/methods/gps.md §1).

This module deliberately imports neither mmengine nor mmpretrain.
"""
from typing import Mapping

from torch import Tensor

from .record import SelectionResult, layer_entry, settings_totals
from .topk import layer_meta, rowwise_indices, validate_scores


def check_gps_args(k) -> None:
    """Validate GPS's ``k`` (ValueError naming the value)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (rule='gps' needs k "
                         f'connections per row), got {k!r}')


def select_gps(scores: Mapping[str, Tensor], k: int) -> SelectionResult:
    """GPS selection: the top-``K`` entries of every row (GPS, CVPR 2024).

    Args:
        scores (Mapping[str, Tensor]): Name -> non-negative scores.
        k (int): Connections per row (``times_para`` in the GPS code),
            >= 1; clipped to each matrix's ``cols``.

    Returns:
        SelectionResult: Exactly ``min(k, cols_l)`` entries per row.
    """
    check_gps_args(k)
    validate_scores(scores)
    meta = layer_meta(scores)
    conns = {n: min(k, info['cols']) for n, info in meta.items()}
    layers = {
        n: layer_entry(info, conns[n], conns[n] * info['rows'])
        for n, info in meta.items()
    }
    result = SelectionResult(
        indices=rowwise_indices(scores, conns),
        layers=layers,
        settings=dict(rule='gps', k=k))
    result.settings.update(settings_totals(meta, result.num_selected))
    return result
