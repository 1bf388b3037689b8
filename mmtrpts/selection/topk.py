"""Top-k helpers shared by the selection rules (pure torch).

A weight of any rank ``>= 2`` is viewed as the matrix ``[out, prod(rest)]``
(rows are output neurons), so a conv weight ``[out, C, kh, kw]`` becomes
``[out, C*kh*kw]`` and flat matrix indices coincide with flat indices into
the original tensor.  The score checks, exact decimal arithmetic, global
k-th largest value and the per-row top-k used by TR-PTS and GPS live here.

This module deliberately imports neither mmengine nor mmpretrain.
"""
import math
from fractions import Fraction
from typing import Dict, Mapping, Union

import torch
from torch import Tensor

# Below this per-row count ``topk`` beats ``kthvalue`` on CPU.
_TOPK_MAX_K = 64
# Integer views whose order equals the order of non-negative floats.
_KEY_DTYPES = {torch.float32: torch.int32, torch.float64: torch.int64}

Number = Union[int, float]


def as_matrix(t: Tensor) -> Tensor:
    """View a weight (or its scores) as ``[out, prod(rest)]``.

    Args:
        t (Tensor): A tensor of rank >= 2 (Linear ``[out, in]`` or conv
            ``[out, C, kh, kw]``).

    Returns:
        Tensor: ``t.reshape(t.shape[0], -1)`` (a view for contiguous
        input); rows are output neurons.

    Raises:
        ValueError: If ``t`` has fewer than 2 dimensions.
    """
    if t.dim() < 2:
        raise ValueError(
            f'as_matrix needs a tensor of rank >= 2 (rows = output '
            f'neurons), got shape {tuple(t.shape)}')
    return t.reshape(t.shape[0], -1)


def exact_ratio(x: Number) -> Fraction:
    """The decimal a user wrote (``0.1`` -> ``1/10``), as an exact ratio."""
    if isinstance(x, int):
        return Fraction(x)
    return Fraction(repr(float(x)))


def round_ratio(x: Fraction, mode: str) -> int:
    """Round an exact ratio: round-half-up, floor or ceil."""
    if mode == 'round':
        return math.floor(x + Fraction(1, 2))
    if mode == 'floor':
        return math.floor(x)
    return math.ceil(x)


def work_dtype(scores: Mapping[str, Tensor]) -> torch.dtype:
    """float64 if any score tensor is float64, else float32."""
    if any(s.dtype == torch.float64 for s in scores.values()):
        return torch.float64
    return torch.float32


def validate_scores(scores: Mapping[str, Tensor]) -> None:
    """Check a score map: non-empty, rank >= 2, float, finite, >= 0.

    Args:
        scores (Mapping[str, Tensor]): Parameter name -> score tensor.

    Raises:
        ValueError: Describing the first offending entry.
    """
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError('scores must be a non-empty dict name -> tensor')
    for name, s in scores.items():
        if not isinstance(s, Tensor):
            raise ValueError(f'scores[{name!r}] is a {type(s).__name__}, '
                             f'not a tensor')
        if s.dim() < 2:
            raise ValueError(f'scores[{name!r}] has shape {tuple(s.shape)}; '
                             f'only weights of rank >= 2 can be selected')
        if not s.is_floating_point():
            raise ValueError(f'scores[{name!r}] has dtype {s.dtype}; '
                             f'expected a floating-point tensor')
        if s.numel() == 0:
            raise ValueError(f'scores[{name!r}] is empty '
                             f'(shape {tuple(s.shape)})')
        lo, hi = s.min(), s.max()  # NaN propagates through both
        if not bool(lo >= 0) or not bool(torch.isfinite(hi)):
            raise ValueError(
                f'scores[{name!r}] must be finite and non-negative, got '
                f'min={lo.item()} max={hi.item()}')


def layer_meta(scores: Mapping[str, Tensor]) -> Dict[str, dict]:
    """Shape bookkeeping of every score tensor."""
    meta = {}
    for name, s in scores.items():
        rows = int(s.shape[0])
        numel = int(s.numel())
        meta[name] = dict(
            shape=[int(d) for d in s.shape],
            rows=rows,
            cols=numel // rows,
            numel=numel)
    return meta


def topset_size(m_percent: Number, total: int) -> int:
    """``k = ceil(m_percent / 100 * total)``, exact, clipped to ``[1, N]``.

    Args:
        m_percent (int | float): Share of the entries, in percent.
        total (int): Number of entries ``N``.

    Returns:
        int: Size of the global top set.
    """
    k = math.ceil(exact_ratio(m_percent) * total / 100)
    return max(1, min(int(k), total))


def kth_largest(values: Tensor, k: int) -> float:
    """Value of the ``k``-th largest entry of a 1-D tensor.

    For float32/float64 input known to be non-negative (as validated
    scores are) the selection runs on the IEEE bit patterns, which order
    like the values and select faster than floats on CPU.

    Args:
        values (Tensor): 1-D tensor.
        k (int): Rank from the top, in ``[1, numel]``.

    Returns:
        float: The value.
    """
    n = values.numel()
    if not 1 <= k <= n:
        raise ValueError(f'k={k} outside [1, {n}]')
    key_dtype = _KEY_DTYPES.get(values.dtype)
    if key_dtype is not None and bool(values.min() >= 0):
        # -0.0 reads as the smallest key; it equals 0.0 in comparisons.
        key = torch.kthvalue(values.view(key_dtype), n - k + 1).values
        return key.view(1).view(values.dtype).item()
    return torch.kthvalue(values, n - k + 1).values.item()


def concat_scores(scores: Mapping[str, Tensor]) -> Tensor:
    """All scores flattened in layer order, in the working dtype."""
    dtype = work_dtype(scores)
    return torch.cat([s.reshape(-1).to(dtype) for s in scores.values()])


def _rowwise_topk_mask(score2d: Tensor, k: int) -> Tensor:
    """Boolean mask of each row's top-``k`` (``1 <= k < cols``).

    Equivalent to a stable descending sort per row (ties go to the lower
    column) but O(numel): the k-th largest value ``v`` of every row is
    found first; entries ``> v`` are kept, and of the entries ``== v``
    the ones with the lowest columns fill the remaining places.
    """
    cols = score2d.shape[1]
    if k <= _TOPK_MAX_K:
        kth = torch.topk(score2d, k, dim=1, sorted=False).values
        kth = kth.min(dim=1, keepdim=True).values
    else:
        kth = torch.kthvalue(score2d, cols - k + 1, dim=1, keepdim=True).values
    at_least = score2d >= kth
    if bool((torch.count_nonzero(at_least, dim=1) == k).all()):
        return at_least  # fast path: no row has a tie across the cut
    greater = score2d > kth
    equal = at_least & ~greater
    need = k - greater.sum(dim=1, keepdim=True)
    take = equal & (equal.cumsum(dim=1) <= need)
    return greater | take


def _rowwise_topk(score2d: Tensor, k: int) -> Tensor:
    """:func:`rowwise_topk` without the input checks."""
    rows, cols = score2d.shape
    k = max(0, min(int(k), cols))
    if k == 0 or rows == 0:
        return torch.empty(0, dtype=torch.long)
    if k == cols:
        return torch.arange(rows * cols, dtype=torch.long)
    mask = _rowwise_topk_mask(score2d, k)
    return mask.reshape(-1).nonzero().squeeze(1).cpu()


def rowwise_topk(score2d: Tensor, k: int) -> Tensor:
    """Flat indices of the top-``k`` entries of every row.

    Ties are broken by the lower column index, exactly as with
    ``torch.sort(row, descending=True, stable=True)[:k]`` (the per-neuron
    selection of GPS, CVPR 2024, and TR-PTS, ICCV 2025).

    Args:
        score2d (Tensor): Scores of shape ``[rows, cols]`` (no NaN).
        k (int): Entries per row, clipped to ``[0, cols]``.

    Returns:
        LongTensor: Row-major flat indices into ``score2d``, ascending;
        ``rows * k`` of them (empty for ``k == 0``).

    Raises:
        ValueError: If ``score2d`` is not 2-D or contains NaN.
    """
    if score2d.dim() != 2:
        raise ValueError(f'rowwise_topk needs a 2-D tensor, got shape '
                         f'{tuple(score2d.shape)}')
    if score2d.is_floating_point() and bool(torch.isnan(score2d).any()):
        raise ValueError('rowwise_topk: scores contain NaN')
    return _rowwise_topk(score2d, k)


def rowwise_indices(scores: Mapping[str, Tensor],
                    conns: Mapping[str, int]) -> Dict[str, Tensor]:
    """Per-row top-``conns[name]`` flat indices of every matrix."""
    return {
        name: _rowwise_topk(as_matrix(s), conns[name])
        for name, s in scores.items()
    }
