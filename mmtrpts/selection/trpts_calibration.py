"""Budget calibration of the TR-PTS rule (pure torch).

TR-PTS (ICCV 2025) is controlled by M (global top share, percent) and
C_min, which the paper tunes by hand. :func:`calibrate_trpts` instead
searches M (and, when that is not enough, a continuous C_min) so that the
realised number of masked-weight entries, ``sum_l C_l * rows_l``, hits a
target (docs/methods/trpts.md §4, calibration).

The realised count is not monotone in M (each ``C_l`` depends on the
ratio ``w_l / w_min``), so M is searched on a log grid and refined; for a
fixed M the count is monotone non-decreasing in C_min, which is then
bisected. All counts come from a precomputed index (per-matrix sorted
score bit patterns), so one evaluation costs ~49 ``searchsorted`` calls;
the per-row top-k runs once, for the final selection.

This module deliberately imports neither mmengine nor mmpretrain.
"""
import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .record import SelectionResult
from .topk import Number, layer_meta, topset_size, validate_scores, work_dtype
from .trpts import allocate, check_trpts_args, select_trpts

_TRPTS_KWARGS = ('c_max', 'weight', 'rounding', 'groups')
_C_MIN_FLOOR = 1e-12
_MAX_BISECTIONS = 200


def reachable_range(meta: Mapping[str, dict],
                    c_max: Optional[Number] = None) -> Tuple[int, int]:
    """Smallest and largest realisable ``sum_l C_l * rows_l``.

    Args:
        meta (Mapping[str, dict]): Name -> ``rows``/``cols``/``numel``.
        c_max (int, optional): Upper clip of ``C_l``.

    Returns:
        tuple: ``(total rows, sum_l rows_l * min(cols_l, c_max))``.
    """
    low = sum(m['rows'] for m in meta.values())
    cap = (lambda m: m['cols']) if c_max is None else (
        lambda m: min(m['cols'], int(c_max)))
    high = sum(m['rows'] * cap(m) for m in meta.values())
    return low, high


class _CountIndex:
    """Sorted per-matrix score bit patterns for O(L log n) count queries.

    For non-negative IEEE floats the bit pattern read as a signed integer
    orders exactly like the value (``abs`` maps -0.0 to +0.0), and integer
    sorting is several times faster than float sorting on CPU.
    """

    def __init__(self, scores: Mapping[str, Tensor], need_sums: bool):
        self.dtype = work_dtype(scores)
        self.key_dtype = (
            torch.int64 if self.dtype == torch.float64 else torch.int32)
        self.names = list(scores)
        self.numels = [s.numel() for s in scores.values()]
        self.keys: List[Tensor] = []
        self.prefix: Optional[List[Tensor]] = [] if need_sums else None
        for s in scores.values():
            values = s.reshape(-1).to(self.dtype).abs()
            keys = torch.sort(values.view(self.key_dtype)).values
            self.keys.append(keys)
            if need_sums:
                sums = keys.view(self.dtype).to(torch.float64).cumsum(0)
                self.prefix.append(torch.cat([sums.new_zeros(1), sums]))
        self.max_key = max(int(k[-1]) for k in self.keys)

    def count_ge(self, keys: Tensor) -> Tensor:
        """Entries with key ``>= keys[i]`` over all matrices."""
        keys = keys.to(self.key_dtype)
        total = torch.zeros(keys.numel(), dtype=torch.int64)
        for numel, sorted_keys in zip(self.numels, self.keys):
            pos = torch.searchsorted(sorted_keys, keys.to(sorted_keys.device))
            total += numel - pos.cpu()
        return total

    def kth_largest_keys(self, ks: Sequence[int]) -> Tensor:
        """Key of the k-th largest entry, for a batch of k.

        It is the largest key ``v`` with ``count(>= v) >= k``, found by
        bisection over the integer key space (<= 64 steps).
        """
        need = torch.tensor(list(ks), dtype=torch.int64)
        lo = torch.zeros_like(need)  # count(>= 0) = N >= k
        hi = torch.full_like(need, self.max_key + 1)  # count = 0 < k
        while bool((hi - lo > 1).any()):
            mid = lo + (hi - lo) // 2
            ok = self.count_ge(mid) >= need
            lo = torch.where(ok, mid, lo)
            hi = torch.where(ok, hi, mid)
        return lo

    def value(self, key: int) -> float:
        """The score value of a key."""
        key_t = torch.tensor([key], dtype=self.key_dtype)
        return key_t.view(self.dtype).item()

    def stats(self,
              key: int) -> Tuple[Dict[str, int], Optional[Dict[str, float]]]:
        """n_l and top-set score sums at threshold key ``key``."""
        key_t = torch.tensor([key], dtype=self.key_dtype)
        counts, sums = {}, ({} if self.prefix is not None else None)
        for i, name in enumerate(self.names):
            pos = int(
                torch.searchsorted(self.keys[i],
                                   key_t.to(self.keys[i].device)))
            counts[name] = self.numels[i] - pos
            if sums is not None:
                prefix = self.prefix[i]
                sums[name] = float(prefix[-1] - prefix[pos])
        return counts, sums


@dataclass
class _Point:
    """One evaluated setting."""
    m_percent: float
    c_min: float
    count: int
    error: int  # |count - target|


class _Evaluator:
    """Realised ``sum C_l * rows_l`` for (M, C_min), with caching."""

    def __init__(self, scores: Mapping[str, Tensor], target: int,
                 alloc_kwargs: dict):
        self.meta = layer_meta(scores)
        self.total = sum(m['numel'] for m in self.meta.values())
        self.target = target
        self.alloc_kwargs = alloc_kwargs
        self.index = _CountIndex(scores, alloc_kwargs.get('weight') == 'sum')
        self.stats: Dict[float, tuple] = {}
        self.thresholds: Dict[float, float] = {}
        self.evaluations = 0

    def prepare(self, ms: Sequence[float]) -> None:
        """Top-set statistics for a batch of M (one batched bisection)."""
        todo = [m for m in ms if m not in self.stats]
        if not todo:
            return
        ks = [topset_size(m, self.total) for m in todo]
        keys = self.index.kth_largest_keys(ks)
        for m, key in zip(todo, keys.tolist()):
            self.stats[m] = self.index.stats(key)
            self.thresholds[m] = self.index.value(key)

    def count(self, m: float, c_min: float) -> int:
        """Realised number of selected entries."""
        self.prepare([m])
        counts, sums = self.stats[m]
        conns, _, _ = allocate(self.meta, counts, sums, c_min,
                               **self.alloc_kwargs)
        self.evaluations += 1
        return sum(conns[n] * info['rows'] for n, info in self.meta.items())

    def point(self, m: float, c_min: float) -> _Point:
        """Evaluate one setting."""
        count = self.count(m, c_min)
        return _Point(m, c_min, count, abs(count - self.target))

    def best_on(self, ms: Sequence[float], c_min: float) -> _Point:
        """Closest point of a grid (ties: the smaller M)."""
        self.prepare(ms)
        points = [self.point(m, c_min) for m in ms]
        return min(points, key=lambda p: (p.error, p.m_percent))


def _log_grid(lo: float, hi: float, num: int, digits: int) -> List[float]:
    """``num`` log-spaced values in ``[lo, hi]`` rounded to ``digits``."""
    if hi <= lo:
        return [lo]
    step = (math.log(hi) - math.log(lo)) / (num - 1)
    values = [lo] + [
        float(f'{math.exp(math.log(lo) + i * step):.{digits}g}')
        for i in range(1, num - 1)
    ] + [hi]
    return sorted(set(v for v in values if lo <= v <= hi))


def _bracket(count_fn, target: int, start: float,
             c_cap: float) -> Tuple[float, int, float, int]:
    """Expand from ``start`` to ``lo <= hi`` with f(lo) <= target <= f(hi).

    Stops at the limits (``_C_MIN_FLOOR``, ``c_cap``) if the target lies
    outside what C_min can reach at this M.
    """
    lo = hi = start
    f_lo = f_hi = count_fn(start)
    while f_lo > target and lo > _C_MIN_FLOOR:
        hi, f_hi = lo, f_lo
        lo = lo / 2
        f_lo = count_fn(lo)
    while f_hi < target and hi < c_cap:
        lo, f_lo = hi, f_hi
        hi = hi * 2
        f_hi = count_fn(hi)
    return lo, f_lo, hi, f_hi


def _bisect_c_min(count_fn, target: int, start: float, c_cap: float) -> float:
    """C_min whose count is closest to ``target`` (count is monotone)."""
    lo, f_lo, hi, f_hi = _bracket(count_fn, target, start, c_cap)
    for _ in range(_MAX_BISECTIONS):
        if f_lo == target or f_hi == target:
            break
        if not f_lo < target < f_hi:
            break
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        f_mid = count_fn(mid)
        if f_mid < target:
            lo, f_lo = mid, f_mid
        else:
            hi, f_hi = mid, f_mid
    best = lo if abs(f_lo - target) <= abs(f_hi - target) else hi
    return _short_decimal(count_fn, best)


def _short_decimal(count_fn, c: float) -> float:
    """The shortest decimal near ``c`` that realises the same count."""
    want = count_fn(c)
    for digits in range(2, 18):
        cand = float(f'{c:.{digits}g}')
        if cand > 0 and count_fn(cand) == want:
            return cand
    return c


def _check_calibration_args(target_entries: int, tolerance: float,
                            m_range: Sequence[float], num_grid: int,
                            kwargs: Mapping[str, Any]) -> None:
    """Validate the arguments of :func:`calibrate_trpts`."""
    if isinstance(target_entries, bool) or not isinstance(
            target_entries, int) or target_entries <= 0:
        raise ValueError(f'target_entries must be a positive integer, got '
                         f'{target_entries!r}')
    if not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ValueError(f'tolerance must be >= 0, got {tolerance!r}')
    if (len(m_range) != 2 or not 0 < m_range[0] <= m_range[1] <= 100):
        raise ValueError(f'm_range must be (lo, hi) with 0 < lo <= hi <= '
                         f'100, got {m_range!r}')
    if not isinstance(num_grid, int) or num_grid < 2:
        raise ValueError(f'num_grid must be an integer >= 2, got '
                         f'{num_grid!r}')
    unknown = sorted(set(kwargs) - set(_TRPTS_KWARGS))
    if unknown:
        raise ValueError(f'calibrate_trpts: unexpected arguments {unknown}; '
                         f'allowed: {list(_TRPTS_KWARGS)}')


def _search(ev: _Evaluator, m_range: Sequence[float], num_grid: int,
            c_min: float, tolerance: float) -> Tuple[_Point, str]:
    """Grid over M, refinement, then (if needed) C_min bisection."""
    grid = _log_grid(float(m_range[0]), float(m_range[1]), num_grid, 4)
    best = ev.best_on(grid, c_min)
    method = 'grid'
    i = grid.index(best.m_percent)
    fine = _log_grid(grid[max(i - 1, 0)], grid[min(i + 1,
                                                   len(grid) - 1)], num_grid,
                     6)
    refined = ev.best_on(fine, c_min)
    if refined.error < best.error:
        best, method = refined, 'refined'
    if best.error <= tolerance * ev.target:
        return best, method
    cap = 2.0 * max(m['cols'] for m in ev.meta.values())
    c_new = _bisect_c_min(lambda c: ev.count(best.m_percent, c), ev.target,
                          float(c_min), max(cap, float(c_min)))
    point = ev.point(best.m_percent, c_new)
    if point.error < best.error:
        return point, 'c_min-bisection'
    return best, method


def calibrate_trpts(scores: Mapping[str, Tensor],
                    target_entries: int,
                    tolerance: float = 0.05,
                    m_range: Sequence[float] = (0.01, 50.0),
                    num_grid: int = 48,
                    c_min: float = 1.0,
                    **kwargs) -> SelectionResult:
    """TR-PTS selection whose size lands near ``target_entries``.

    TR-PTS (ICCV 2025) hand-tunes M and C_min; this searches them instead
    (docs/methods/trpts.md §4, calibration): (1) a log grid of M over
    ``m_range`` with the given ``c_min``; (2) a finer grid between the best
    point's grid neighbours; (3) if still outside the tolerance, that M is
    kept and a continuous C_min is bisected (the count is monotone
    non-decreasing in C_min for a fixed M).

    Args:
        scores (Mapping[str, Tensor]): Name -> non-negative scores.
        target_entries (int): Masked-weight entries wanted (see
            :func:`budget_to_entries`).
        tolerance (float): Accepted relative error of the realised count.
        m_range (Sequence[float]): Search interval of M, in percent.
        num_grid (int): Points per grid.
        c_min (float): C_min of the grid stages and start of the
            bisection.
        **kwargs: ``c_max``, ``weight``, ``rounding``, ``groups`` of
            :func:`select_trpts`.

    Returns:
        SelectionResult: Its ``settings`` add ``target_entries``,
        ``realised_entries``, ``relative_error``, ``tolerance``,
        ``within_tolerance``, ``calibration`` (``'grid'``, ``'refined'`` or
        ``'c_min-bisection'``) and ``evaluations``. A warning is issued if
        the tolerance could not be met.

    Raises:
        ValueError: If the target lies outside the reachable range (one
            entry per row ... all entries) or an argument is invalid.
    """
    _check_calibration_args(target_entries, tolerance, m_range, num_grid,
                            kwargs)
    alloc_kwargs = dict(
        c_max=kwargs.get('c_max'),
        weight=kwargs.get('weight', 'density'),
        rounding=kwargs.get('rounding', 'round'),
        groups=kwargs.get('groups'))
    check_trpts_args(m_range[0], c_min, alloc_kwargs['c_max'],
                     alloc_kwargs['weight'], alloc_kwargs['rounding'])
    validate_scores(scores)
    low, high = reachable_range(layer_meta(scores), alloc_kwargs['c_max'])
    if not low <= target_entries <= high:
        raise ValueError(
            f'target_entries={target_entries} is unreachable: the reachable '
            f'range is [{low}, {high}] entries (one entry per row ... every '
            f'row full)')
    ev = _Evaluator(scores, target_entries, alloc_kwargs)
    point, method = _search(ev, m_range, num_grid, float(c_min), tolerance)
    result = select_trpts(
        scores,
        point.m_percent,
        point.c_min,
        threshold=ev.thresholds[point.m_percent],
        **alloc_kwargs)
    return _record(result, point, method, ev, tolerance, m_range, num_grid)


def _record(result: SelectionResult, point: _Point, method: str,
            ev: _Evaluator, tolerance: float, m_range: Sequence[float],
            num_grid: int) -> SelectionResult:
    """Store the calibration outcome in ``result.settings``."""
    realised = result.num_selected
    rel = (realised - ev.target) / ev.target
    within = abs(realised - ev.target) <= tolerance * ev.target
    result.settings.update(
        target_entries=ev.target,
        realised_entries=realised,
        relative_error=rel,
        tolerance=tolerance,
        within_tolerance=within,
        calibration=method,
        predicted_entries=point.count,
        m_range=[float(m_range[0]), float(m_range[1])],
        num_grid=num_grid,
        evaluations=ev.evaluations)
    if not within:
        warnings.warn(
            f'calibrate_trpts: realised {realised} entries for target '
            f'{ev.target} (relative error {rel:+.3%}, tolerance '
            f'{tolerance:.1%}) at m_percent={point.m_percent}, '
            f'c_min={point.c_min}')
    return result
