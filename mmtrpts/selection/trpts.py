"""TR-PTS layer-wise allocation and selection (pure torch).

TR-PTS (Luo et al., *TR-PTS: Task-Relevant Parameter and Token Selection
for Efficient Tuning*, ICCV 2025, arXiv 2507.22872): layer-wise connection
counts ``C_l`` derived from how the global top-M% of the Fisher scores is
spread over the matrices, then per-row top-``C_l``
(docs/methods/trpts.md §4).  The budget calibration of M and C_min lives
beside it in :mod:`.trpts_calibration`.

This module deliberately imports neither mmengine nor mmpretrain.
"""
import math
import re
from fractions import Fraction
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from .record import SelectionResult, layer_entry, settings_totals
from .topk import (Number, concat_scores, exact_ratio, kth_largest, layer_meta,
                   round_ratio, rowwise_indices, topset_size, validate_scores,
                   work_dtype)

WEIGHTS = ('density', 'count', 'sum')
ROUNDINGS = ('round', 'floor', 'ceil')


def check_trpts_args(m_percent: Optional[Number], c_min: Number,
                     c_max: Optional[Number], weight: str,
                     rounding: str) -> None:
    """Validate the TR-PTS parameters (ValueError naming the value).

    ``m_percent=None`` checks the other parameters only (a budget will
    calibrate M).
    """
    if m_percent is not None and (not isinstance(m_percent, (int, float))
                                  or not 0 < m_percent <= 100):
        raise ValueError(f'm_percent must be in (0, 100], got {m_percent!r}')
    if (not isinstance(c_min, (int, float)) or not math.isfinite(c_min)
            or c_min <= 0):
        raise ValueError(f'c_min must be a finite number > 0, got '
                         f'{c_min!r}')
    if c_max is not None and (not isinstance(c_max, (int, float)) or c_max < 1
                              or int(c_max) != c_max):
        raise ValueError(f'c_max must be None or an integer >= 1, got '
                         f'{c_max!r}')
    if weight not in WEIGHTS:
        raise ValueError(f'unknown weight {weight!r}; expected one of '
                         f'{WEIGHTS}')
    if rounding not in ROUNDINGS:
        raise ValueError(f'unknown rounding {rounding!r}; expected one of '
                         f'{ROUNDINGS}')


def _group_units(names: List[str],
                 groups: Optional[Mapping[str, Any]]) -> Dict[Any, List[str]]:
    """Allocation units: each matrix alone, or the matrices of a group.

    Matrices missing from ``groups`` form a unit of their own.
    """
    if groups is None:
        return {('matrix', n): [n] for n in names}
    if not isinstance(groups, Mapping):
        raise ValueError(f'groups must be a dict name -> group key, got '
                         f'{type(groups).__name__}')
    unknown = sorted(set(groups) - set(names))
    if unknown:
        raise ValueError(f'groups names unknown matrices: {unknown}')
    units: Dict[Any, List[str]] = {}
    for n in names:
        key = ('group', groups[n]) if n in groups else ('matrix', n)
        units.setdefault(key, []).append(n)
    return units


def block_groups(names: List[str],
                 pattern: str = r'(?:^|\.)layers\.(\d+)\.') -> Dict[str, str]:
    """Group key per matrix for the TR-PTS "block" granularity.

    Args:
        names (List[str]): Parameter names.
        pattern (str): Regex whose first group is the block index.

    Returns:
        Dict[str, str]: Name -> ``'block<i>'`` for names inside a block;
        other names (e.g. the patch embedding) are left out, so they stay
        a unit of their own.
    """
    regex = re.compile(pattern)
    out = {}
    for n in names:
        match = regex.search(n)
        if match:
            out[n] = f'block{match.group(1)}'
    return out


def allocate(
    meta: Mapping[str, dict],
    counts: Mapping[str, int],
    sums: Optional[Mapping[str, float]],
    c_min: Number = 1.0,
    c_max: Optional[Number] = None,
    weight: str = 'density',
    rounding: str = 'round',
    groups: Optional[Mapping[str, Any]] = None
) -> Tuple[Dict[str, int], Dict[str, Fraction], Fraction]:
    """Connections per row from the top-set statistics (docs/methods/trpts.md
    §4).

    ``C_l = clamp(rnd(w_l / w_min * c_min), 1, cols_l)`` with ``w_min`` the
    smallest positive ``w``; a unit with ``w = 0`` gets 1. Exact rational
    arithmetic keeps the rounding reproducible.

    Args:
        meta (Mapping[str, dict]): Name -> ``rows``/``cols``/``numel``.
        counts (Mapping[str, int]): Name -> n_l, entries in the top set.
        sums (Mapping[str, float], optional): Name -> sum of the top-set
            scores (needed for ``weight='sum'``).
        c_min, c_max, weight, rounding, groups: See :func:`select_trpts`.

    Returns:
        tuple: ``(C per name, w per name, w_min)``; ``w_min`` is 0 when
        every ``w`` is 0.
    """
    units = _group_units(list(meta), groups)
    w_unit = {}
    for key, members in units.items():
        if weight == 'density':
            w_unit[key] = Fraction(
                sum(counts[n] for n in members),
                sum(meta[n]['numel'] for n in members))
        elif weight == 'count':
            w_unit[key] = Fraction(sum(counts[n] for n in members))
        else:
            w_unit[key] = sum((Fraction(float(sums[n])) for n in members),
                              Fraction(0))
    positive = [w for w in w_unit.values() if w > 0]
    w_min = min(positive) if positive else Fraction(0)
    c_exact = exact_ratio(c_min)
    conns, w_layer = {}, {}
    for key, members in units.items():
        w = w_unit[key]
        c = round_ratio(w / w_min * c_exact, rounding) if w > 0 else 1
        if c_max is not None:
            c = min(c, int(c_max))
        for n in members:
            conns[n] = max(1, min(c, meta[n]['cols']))
            w_layer[n] = w
    return conns, w_layer, w_min


def _top_stats(
        scores: Mapping[str, Tensor], threshold: float,
        need_sums: bool) -> Tuple[Dict[str, int], Optional[Dict[str, float]]]:
    """n_l (and the top-set score sums) at a threshold."""
    dtype = work_dtype(scores)
    counts, sums = {}, ({} if need_sums else None)
    for name, s in scores.items():
        s = s.to(dtype)  # compare in the dtype the threshold came from
        top = s >= threshold
        counts[name] = int(torch.count_nonzero(top))
        if need_sums:
            sums[name] = torch.where(top, s, 0).sum(dtype=torch.float64).item()
    return counts, sums


def _trpts_plan(
        scores: Mapping[str, Tensor],
        m_percent: Number,
        c_min: Number,
        c_max: Optional[Number],
        weight: str,
        rounding: str,
        groups: Optional[Mapping[str, Any]],
        threshold: Optional[float] = None) -> Tuple[Dict[str, dict], dict]:
    """Layer infos and summary settings of the TR-PTS allocation.

    ``threshold`` may be passed by a caller that already knows the k-th
    largest score (the calibration index); it is then not recomputed.
    """
    check_trpts_args(m_percent, c_min, c_max, weight, rounding)
    validate_scores(scores)
    meta = layer_meta(scores)
    total = sum(m['numel'] for m in meta.values())
    k = topset_size(m_percent, total)
    if threshold is None:
        threshold = kth_largest(concat_scores(scores), k)
    counts, sums = _top_stats(scores, threshold, weight == 'sum')
    conns, w, w_min = allocate(meta, counts, sums, c_min, c_max, weight,
                               rounding, groups)
    layers = {}
    for name, info in meta.items():
        entry = layer_entry(info, conns[name], conns[name] * info['rows'])
        entry.update(
            top_count=counts[name],
            top_density=counts[name] / info['numel'],
            w=float(w[name]))
        if groups is not None and name in groups:
            entry['group'] = groups[name]
        layers[name] = entry
    summary = dict(
        rule='trpts',
        m_percent=m_percent,
        c_min=c_min,
        c_max=c_max,
        weight=weight,
        rounding=rounding,
        groups=None if groups is None else dict(groups),
        topset_size=k,
        threshold=threshold,
        w_min=float(w_min))
    return layers, summary


def trpts_connections(
        scores: Mapping[str, Tensor],
        m_percent: Number,
        c_min: Number = 1.0,
        c_max: Optional[Number] = None,
        weight: str = 'density',
        rounding: str = 'round',
        groups: Optional[Mapping[str, Any]] = None) -> Dict[str, dict]:
    """TR-PTS layer-wise allocation (TR-PTS, ICCV 2025; docs/methods/trpts.md
    §4).

    ``t`` is the ``ceil(M/100 * N)``-th largest score over all ``N``
    entries; ``n_l = count(F_l >= t)``; ``w_l`` is ``n_l / numel_l``
    (``'density'``), ``n_l`` (``'count'``) or ``sum(F_l[F_l >= t])``
    (``'sum'``); ``C_l = clamp(rnd(w_l / w_min * c_min), 1, cols_l)``.

    Args:
        scores (Mapping[str, Tensor]): Name -> non-negative scores with
            the parameter's shape; insertion order is the layer order.
        m_percent (float): M, the global top share in percent, (0, 100].
        c_min (float): C_min > 0; the count of the sparsest unit.
        c_max (int, optional): Extra upper clip of ``C_l``.
        weight (str): ``'density'`` (default), ``'count'`` or ``'sum'``.
        rounding (str): ``'round'`` (half up), ``'floor'`` or ``'ceil'``.
        groups (Mapping[str, Any], optional): Name -> group key; matrices
            of a group share one C from the pooled statistics (e.g. the
            transformer block, see :func:`block_groups`), each clipped to
            its own ``cols``.

    Returns:
        Dict[str, dict]: Per-matrix info (``c``, ``selected``, ``density``,
        ``top_count``, ``top_density``, ``w``, shape data).

    Raises:
        ValueError: On invalid arguments or scores.
    """
    layers, _ = _trpts_plan(scores, m_percent, c_min, c_max, weight, rounding,
                            groups)
    return layers


def select_trpts(scores: Mapping[str, Tensor],
                 m_percent: Number,
                 c_min: Number = 1.0,
                 c_max: Optional[Number] = None,
                 weight: str = 'density',
                 rounding: str = 'round',
                 groups: Optional[Mapping[str, Any]] = None,
                 threshold: Optional[float] = None) -> SelectionResult:
    """TR-PTS parameter selection (TR-PTS, ICCV 2025).

    The allocation of :func:`trpts_connections`, then in every matrix each
    row keeps its top-``C_l`` entries by score (ties: lower column).

    Args:
        scores, m_percent, c_min, c_max, weight, rounding, groups: See
            :func:`trpts_connections`.
        threshold (float, optional): The ``ceil(M/100 * N)``-th largest
            score, when the caller already knows it (the calibration's
            count index); it is computed otherwise.

    Returns:
        SelectionResult: ``num_selected == sum(C_l * rows_l)``.
    """
    layers, settings = _trpts_plan(scores, m_percent, c_min, c_max, weight,
                                   rounding, groups, threshold)
    indices = rowwise_indices(scores, {
        n: info['c']
        for n, info in layers.items()
    })
    result = SelectionResult(indices=indices, layers=layers, settings=settings)
    settings.update(settings_totals(layers, result.num_selected))
    return result
