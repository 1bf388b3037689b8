"""Unstructured global top-k selection, an ablation (pure torch).

The ``num`` (or ``ceil(fraction * N)``) highest scores over all entries of
all eligible matrices, with no per-neuron structure.

This module deliberately imports neither mmengine nor mmpretrain.
"""
import math
from typing import Mapping, Optional

import torch
from torch import Tensor

from .record import SelectionResult, layer_entry, settings_totals
from .topk import (Number, concat_scores, exact_ratio, kth_largest, layer_meta,
                   validate_scores)


def check_global_topk_args(num: Optional[int],
                           fraction: Optional[Number]) -> None:
    """Validate ``num`` / ``fraction`` (ValueError naming the value)."""
    if (num is None) == (fraction is None):
        raise ValueError("rule='global_topk' needs exactly one of num and "
                         'fraction')
    if num is not None and (isinstance(num, bool) or not isinstance(num, int)
                            or num < 1):
        raise ValueError(f'num must be an integer >= 1, got {num!r}')
    if fraction is not None and not (isinstance(fraction, (int, float))
                                     and 0 < fraction <= 1):
        raise ValueError(f'fraction must be in (0, 1], got {fraction!r}')


def _global_count(total: int, num: Optional[int],
                  fraction: Optional[Number]) -> int:
    """Number of entries for :func:`select_global_topk`."""
    check_global_topk_args(num, fraction)
    if num is not None:
        if num > total:
            raise ValueError(f'num must be an integer in [1, {total}], '
                             f'got {num!r}')
        return num
    return max(1, min(total, math.ceil(exact_ratio(fraction) * total)))


def select_global_topk(scores: Mapping[str, Tensor],
                       num: Optional[int] = None,
                       fraction: Optional[Number] = None) -> SelectionResult:
    """Unstructured global top-k over all entries.

    Ties are broken by the lower (layer order, flat index), so the result
    is deterministic. Rows may get no entry; ``c`` is None in the layer
    infos.

    Args:
        scores (Mapping[str, Tensor]): Name -> non-negative scores.
        num (int, optional): Number of entries to select.
        fraction (float, optional): Share of all entries in (0, 1];
            ``ceil(fraction * N)`` entries. Give exactly one of the two.

    Returns:
        SelectionResult: Exactly ``num`` entries in total.
    """
    validate_scores(scores)
    meta = layer_meta(scores)
    flat = concat_scores(scores)
    count = _global_count(flat.numel(), num, fraction)
    threshold = kth_largest(flat, count)
    mask = flat > threshold
    need = count - int(torch.count_nonzero(mask))
    ties = (flat == threshold).nonzero().squeeze(1)[:need]
    mask[ties] = True
    indices, layers, start = {}, {}, 0
    for name, info in meta.items():
        part = mask[start:start + info['numel']]
        indices[name] = part.nonzero().squeeze(1).cpu()
        layers[name] = layer_entry(info, None, indices[name].numel())
        start += info['numel']
    settings = dict(
        rule='global_topk', num=num, fraction=fraction, threshold=threshold)
    settings.update(settings_totals(meta, count))
    return SelectionResult(indices=indices, layers=layers, settings=settings)
