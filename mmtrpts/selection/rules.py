"""Pure-torch parameter-selection rules: TR-PTS, GPS and global top-k.

Every rule maps Fisher-style scores (one non-negative tensor per eligible
weight, see ``TRPTS.md`` §3) to a :class:`SelectionResult`: flat indices
into each parameter (``param.view(-1)``) that are trainable.

* :func:`select_trpts` -- TR-PTS (Luo et al., *TR-PTS: Task-Relevant
  Parameter and Token Selection for Efficient Tuning*, ICCV 2025):
  layer-wise connection counts ``C_l`` derived from how the global top-M%
  of scores is spread over the matrices, then per-row top-``C_l``.
* :func:`select_gps` -- GPS (Zhang et al., *Gradient-based Parameter
  Selection for Efficient Fine-Tuning*, CVPR 2024): one uniform ``K`` per
  row.
* :func:`select_global_topk` -- unstructured global top-k (an ablation).

A weight of any rank ``>= 2`` is viewed as the matrix
``[out, prod(rest)]`` (rows are output neurons), so a conv weight
``[out, C, kh, kw]`` becomes ``[out, C*kh*kw]`` and flat matrix indices
coincide with flat indices into the original tensor.

This module deliberately imports neither mmengine nor mmpretrain.
"""
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

WEIGHTS = ('density', 'count', 'sum')
ROUNDINGS = ('round', 'floor', 'ceil')
FORMAT = 'mmtrpts.selection'
FORMAT_VERSION = 1
_LAYER_KEYS = ('shape', 'rows', 'cols', 'numel', 'selected')
_INT32_MAX = 2**31 - 1
# Below this per-row count ``topk`` beats ``kthvalue`` on CPU.
_TOPK_MAX_K = 64
# Integer views whose order equals the order of non-negative floats.
_KEY_DTYPES = {torch.float32: torch.int32, torch.float64: torch.int64}

Number = Union[int, float]


# --------------------------------------------------------------------------
# Basic helpers
# --------------------------------------------------------------------------
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


def _exact(x: Number) -> Fraction:
    """The decimal a user wrote (``0.1`` -> ``1/10``), as an exact ratio."""
    if isinstance(x, int):
        return Fraction(x)
    return Fraction(repr(float(x)))


def _round(x: Fraction, mode: str) -> int:
    """Round an exact ratio: round-half-up, floor or ceil."""
    if mode == 'round':
        return math.floor(x + Fraction(1, 2))
    if mode == 'floor':
        return math.floor(x)
    return math.ceil(x)


def _work_dtype(scores: Mapping[str, Tensor]) -> torch.dtype:
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


def _layer_meta(scores: Mapping[str, Tensor]) -> Dict[str, dict]:
    """Shape bookkeeping of every score tensor."""
    meta = {}
    for name, s in scores.items():
        rows = int(s.shape[0])
        numel = int(s.numel())
        meta[name] = dict(shape=[int(d) for d in s.shape], rows=rows,
                          cols=numel // rows, numel=numel)
    return meta


def topset_size(m_percent: Number, total: int) -> int:
    """``k = ceil(m_percent / 100 * total)``, exact, clipped to ``[1, N]``.

    Args:
        m_percent (int | float): Share of the entries, in percent.
        total (int): Number of entries ``N``.

    Returns:
        int: Size of the global top set.
    """
    k = math.ceil(_exact(m_percent) * total / 100)
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


def _concat(scores: Mapping[str, Tensor]) -> Tensor:
    """All scores flattened in layer order, in the working dtype."""
    dtype = _work_dtype(scores)
    return torch.cat([s.reshape(-1).to(dtype) for s in scores.values()])


# --------------------------------------------------------------------------
# Row-wise top-k
# --------------------------------------------------------------------------
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
        kth = torch.kthvalue(score2d, cols - k + 1, dim=1,
                             keepdim=True).values
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


# --------------------------------------------------------------------------
# Result type
# --------------------------------------------------------------------------
def _plain(value: Any, where: str) -> Any:
    """Deep copy into plain python types (tuples become lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise ValueError(f'{where}: key {key!r} is not str/int')
            out[key] = _plain(item, f'{where}[{key!r}]')
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if isinstance(value, Tensor) and value.dim() == 0:
        return value.item()
    raise ValueError(f'{where}: {type(value).__name__} is not a plain '
                     f'python type')


@dataclass
class SelectionResult:
    """Which entries of each eligible weight are trainable.

    Attributes:
        indices (Dict[str, Tensor]): Name -> ascending int64 flat indices
            into ``param.view(-1)``.
        layers (Dict[str, dict]): Name -> per-matrix info: ``shape``,
            ``rows``, ``cols``, ``numel``, ``c`` (connections per row, None
            for unstructured rules), ``selected`` (number of indices),
            ``density`` (``selected / numel``) and rule-specific keys
            (TR-PTS: ``top_count`` n_l, ``top_density``, ``w``).
        settings (dict): The rule name and every parameter, realised
            values included.
    """
    indices: Dict[str, Tensor]
    layers: Dict[str, dict]
    settings: dict = field(default_factory=dict)

    @property
    def num_selected(self) -> int:
        """Total number of selected entries over all matrices."""
        return sum(int(info['selected']) for info in self.layers.values())

    @property
    def num_entries(self) -> int:
        """Total number of entries of all eligible matrices."""
        return sum(int(info['numel']) for info in self.layers.values())

    def mask(self, name: str) -> Tensor:
        """Boolean mask (True = trainable) with the parameter's shape."""
        info = self.layers[name]
        flat = torch.zeros(info['numel'], dtype=torch.bool)
        flat[self.indices[name]] = True
        return flat.view(info['shape'])

    def to_dict(self) -> dict:
        """Plain python types + int32 tensors, ``weights_only``-loadable.

        Returns:
            dict: ``format``, ``version``, ``indices`` (int32), ``layers``
            and ``settings``.
        """
        indices = {}
        for name, idx in self.indices.items():
            if self.layers[name]['numel'] > _INT32_MAX:
                raise ValueError(f'{name}: too many entries for int32 '
                                 f'indices')
            indices[name] = idx.to(torch.int32).contiguous()
        return dict(
            format=FORMAT, version=FORMAT_VERSION, indices=indices,
            layers=_plain(self.layers, 'layers'),
            settings=_plain(self.settings, 'settings'))

    @classmethod
    def from_dict(cls, data: Mapping) -> 'SelectionResult':
        """Inverse of :meth:`to_dict`, with validation.

        Args:
            data (Mapping): As produced by :meth:`to_dict`.

        Returns:
            SelectionResult: With int64 indices.

        Raises:
            ValueError: If ``data`` is malformed.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f'selection record must be a dict, got '
                             f'{type(data).__name__}')
        if data.get('format') != FORMAT:
            raise ValueError(f'not a selection record: format is '
                             f'{data.get("format")!r}, expected {FORMAT!r}')
        if data.get('version') != FORMAT_VERSION:
            raise ValueError(f'unsupported selection record version '
                             f'{data.get("version")!r} (expected '
                             f'{FORMAT_VERSION})')
        for key in ('indices', 'layers', 'settings'):
            if not isinstance(data.get(key), Mapping):
                raise ValueError(f'selection record: {key!r} must be a '
                                 f'dict')
        indices, layers = data['indices'], data['layers']
        if list(indices) != list(layers):
            raise ValueError(f'selection record: indices and layers name '
                             f'different matrices: {sorted(indices)} vs '
                             f'{sorted(layers)}')
        out = {}
        for name, info in layers.items():
            _check_layer_info(name, info)
            out[name] = _check_indices(name, indices[name], info)
        return cls(indices=out, layers=_plain(layers, 'layers'),
                   settings=_plain(data['settings'], 'settings'))


def _check_layer_info(name: str, info: Any) -> None:
    """Validate one ``layers`` entry of a selection record."""
    if not isinstance(info, Mapping):
        raise ValueError(f'selection record: layers[{name!r}] is not a dict')
    missing = [k for k in _LAYER_KEYS if k not in info]
    if missing:
        raise ValueError(f'selection record: layers[{name!r}] lacks '
                         f'{missing}')
    shape = info['shape']
    if (not isinstance(shape, (list, tuple)) or len(shape) < 2
            or not all(isinstance(d, int) and d > 0 for d in shape)):
        raise ValueError(f'selection record: layers[{name!r}] has invalid '
                         f'shape {shape!r}')
    numel = math.prod(shape)
    if (info['numel'] != numel or info['rows'] != shape[0]
            or info['rows'] * info['cols'] != numel):
        raise ValueError(f'selection record: layers[{name!r}] rows/cols/'
                         f'numel {info["rows"]}/{info["cols"]}/'
                         f'{info["numel"]} do not match shape {shape}')


def _check_indices(name: str, idx: Any, info: Mapping) -> Tensor:
    """Validate one index tensor; returns it as int64."""
    if (not isinstance(idx, Tensor) or idx.dim() != 1
            or idx.dtype not in (torch.int32, torch.int64)):
        desc = (f'{idx.dtype} tensor of shape {tuple(idx.shape)}'
                if isinstance(idx, Tensor) else type(idx).__name__)
        raise ValueError(f'selection record: indices[{name!r}] must be a '
                         f'1-D int32/int64 tensor, got {desc}')
    idx = idx.to(torch.int64)
    if idx.numel() != info['selected']:
        raise ValueError(f'selection record: indices[{name!r}] has '
                         f'{idx.numel()} entries but layers says '
                         f'selected={info["selected"]}')
    if idx.numel():
        if int(idx.min()) < 0 or int(idx.max()) >= info['numel']:
            raise ValueError(f'selection record: indices[{name!r}] out of '
                             f'range [0, {info["numel"]})')
        if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
            raise ValueError(f'selection record: indices[{name!r}] are not '
                             f'strictly ascending')
    return idx


def _layer_entry(meta: dict, c: Optional[int], selected: int) -> dict:
    """Per-matrix info common to all rules."""
    entry = dict(meta)
    entry.update(c=c, selected=int(selected),
                 density=int(selected) / meta['numel'])
    return entry


def _settings_totals(meta: Mapping[str, dict], selected: int) -> dict:
    """Totals recorded in every result's settings."""
    return dict(num_entries=sum(m['numel'] for m in meta.values()),
                num_rows=sum(m['rows'] for m in meta.values()),
                num_selected=int(selected))


# --------------------------------------------------------------------------
# TR-PTS allocation
# --------------------------------------------------------------------------
def _check_trpts_args(m_percent: Number, c_min: Number,
                      c_max: Optional[Number], weight: str,
                      rounding: str) -> None:
    """Validate the TR-PTS parameters (ValueError naming the value)."""
    if not isinstance(m_percent, (int, float)) or not 0 < m_percent <= 100:
        raise ValueError(f'm_percent must be in (0, 100], got {m_percent!r}')
    if (not isinstance(c_min, (int, float)) or not math.isfinite(c_min)
            or c_min <= 0):
        raise ValueError(f'c_min must be a finite number > 0, got '
                         f'{c_min!r}')
    if c_max is not None and (not isinstance(c_max, (int, float))
                              or c_max < 1 or int(c_max) != c_max):
        raise ValueError(f'c_max must be None or an integer >= 1, got '
                         f'{c_max!r}')
    if weight not in WEIGHTS:
        raise ValueError(f'unknown weight {weight!r}; expected one of '
                         f'{WEIGHTS}')
    if rounding not in ROUNDINGS:
        raise ValueError(f'unknown rounding {rounding!r}; expected one of '
                         f'{ROUNDINGS}')


def _group_units(names: List[str], groups: Optional[Mapping[str, Any]]
                 ) -> Dict[Any, List[str]]:
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


def allocate(meta: Mapping[str, dict], counts: Mapping[str, int],
             sums: Optional[Mapping[str, float]], c_min: Number = 1.0,
             c_max: Optional[Number] = None, weight: str = 'density',
             rounding: str = 'round',
             groups: Optional[Mapping[str, Any]] = None
             ) -> Tuple[Dict[str, int], Dict[str, Fraction], Fraction]:
    """Connections per row from the top-set statistics (TRPTS.md §4).

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
            w_unit[key] = Fraction(sum(counts[n] for n in members),
                                   sum(meta[n]['numel'] for n in members))
        elif weight == 'count':
            w_unit[key] = Fraction(sum(counts[n] for n in members))
        else:
            w_unit[key] = sum((Fraction(float(sums[n])) for n in members),
                              Fraction(0))
    positive = [w for w in w_unit.values() if w > 0]
    w_min = min(positive) if positive else Fraction(0)
    c_exact = _exact(c_min)
    conns, w_layer = {}, {}
    for key, members in units.items():
        w = w_unit[key]
        c = _round(w / w_min * c_exact, rounding) if w > 0 else 1
        if c_max is not None:
            c = min(c, int(c_max))
        for n in members:
            conns[n] = max(1, min(c, meta[n]['cols']))
            w_layer[n] = w
    return conns, w_layer, w_min


def _top_stats(scores: Mapping[str, Tensor], threshold: float,
               need_sums: bool
               ) -> Tuple[Dict[str, int], Optional[Dict[str, float]]]:
    """n_l (and the top-set score sums) at a threshold."""
    dtype = _work_dtype(scores)
    counts, sums = {}, ({} if need_sums else None)
    for name, s in scores.items():
        s = s.to(dtype)  # compare in the dtype the threshold came from
        top = s >= threshold
        counts[name] = int(torch.count_nonzero(top))
        if need_sums:
            sums[name] = torch.where(top, s, 0).sum(
                dtype=torch.float64).item()
    return counts, sums


def _trpts_plan(scores: Mapping[str, Tensor], m_percent: Number,
                c_min: Number, c_max: Optional[Number], weight: str,
                rounding: str, groups: Optional[Mapping[str, Any]],
                threshold: Optional[float] = None
                ) -> Tuple[Dict[str, dict], dict]:
    """Layer infos and summary settings of the TR-PTS allocation.

    ``threshold`` may be passed by a caller that already knows the k-th
    largest score (the calibration index); it is then not recomputed.
    """
    _check_trpts_args(m_percent, c_min, c_max, weight, rounding)
    validate_scores(scores)
    meta = _layer_meta(scores)
    total = sum(m['numel'] for m in meta.values())
    k = topset_size(m_percent, total)
    if threshold is None:
        threshold = kth_largest(_concat(scores), k)
    counts, sums = _top_stats(scores, threshold, weight == 'sum')
    conns, w, w_min = allocate(meta, counts, sums, c_min, c_max, weight,
                               rounding, groups)
    layers = {}
    for name, info in meta.items():
        entry = _layer_entry(info, conns[name], conns[name] * info['rows'])
        entry.update(top_count=counts[name],
                     top_density=counts[name] / info['numel'],
                     w=float(w[name]))
        if groups is not None and name in groups:
            entry['group'] = groups[name]
        layers[name] = entry
    summary = dict(
        rule='trpts', m_percent=m_percent, c_min=c_min, c_max=c_max,
        weight=weight, rounding=rounding,
        groups=None if groups is None else dict(groups), topset_size=k,
        threshold=threshold, w_min=float(w_min))
    return layers, summary


def trpts_connections(scores: Mapping[str, Tensor], m_percent: Number,
                      c_min: Number = 1.0, c_max: Optional[Number] = None,
                      weight: str = 'density', rounding: str = 'round',
                      groups: Optional[Mapping[str, Any]] = None
                      ) -> Dict[str, dict]:
    """TR-PTS layer-wise allocation (TR-PTS, ICCV 2025; TRPTS.md §4).

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
    layers, _ = _trpts_plan(scores, m_percent, c_min, c_max, weight,
                            rounding, groups)
    return layers


def _rowwise_indices(scores: Mapping[str, Tensor],
                     conns: Mapping[str, int]) -> Dict[str, Tensor]:
    """Per-row top-``C_l`` flat indices of every matrix."""
    return {name: _rowwise_topk(as_matrix(s), conns[name])
            for name, s in scores.items()}


def select_trpts(scores: Mapping[str, Tensor], m_percent: Number,
                 c_min: Number = 1.0, c_max: Optional[Number] = None,
                 weight: str = 'density', rounding: str = 'round',
                 groups: Optional[Mapping[str, Any]] = None
                 ) -> SelectionResult:
    """TR-PTS parameter selection (TR-PTS, ICCV 2025).

    The allocation of :func:`trpts_connections`, then in every matrix each
    row keeps its top-``C_l`` entries by score (ties: lower column).

    Args:
        scores, m_percent, c_min, c_max, weight, rounding, groups: See
            :func:`trpts_connections`.

    Returns:
        SelectionResult: ``num_selected == sum(C_l * rows_l)``.
    """
    return _select_trpts(scores, m_percent, c_min, c_max, weight, rounding,
                         groups)


def _select_trpts(scores: Mapping[str, Tensor], m_percent: Number,
                  c_min: Number, c_max: Optional[Number], weight: str,
                  rounding: str, groups: Optional[Mapping[str, Any]],
                  threshold: Optional[float] = None) -> SelectionResult:
    """:func:`select_trpts` with an optional precomputed threshold."""
    layers, settings = _trpts_plan(scores, m_percent, c_min, c_max, weight,
                                   rounding, groups, threshold)
    indices = _rowwise_indices(
        scores, {n: info['c'] for n, info in layers.items()})
    result = SelectionResult(indices=indices, layers=layers,
                             settings=settings)
    settings.update(_settings_totals(layers, result.num_selected))
    return result


# --------------------------------------------------------------------------
# GPS and global top-k
# --------------------------------------------------------------------------
def select_gps(scores: Mapping[str, Tensor], k: int) -> SelectionResult:
    """GPS selection: the top-``K`` entries of every row (GPS, CVPR 2024).

    Args:
        scores (Mapping[str, Tensor]): Name -> non-negative scores.
        k (int): Connections per row (``times_para`` in the GPS code),
            >= 1; clipped to each matrix's ``cols``.

    Returns:
        SelectionResult: Exactly ``min(k, cols_l)`` entries per row.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f'k must be an integer >= 1, got {k!r}')
    validate_scores(scores)
    meta = _layer_meta(scores)
    conns = {n: min(k, info['cols']) for n, info in meta.items()}
    layers = {n: _layer_entry(info, conns[n], conns[n] * info['rows'])
              for n, info in meta.items()}
    result = SelectionResult(indices=_rowwise_indices(scores, conns),
                             layers=layers, settings=dict(rule='gps', k=k))
    result.settings.update(_settings_totals(meta, result.num_selected))
    return result


def _global_count(total: int, num: Optional[int],
                  fraction: Optional[Number]) -> int:
    """Number of entries for :func:`select_global_topk`."""
    if (num is None) == (fraction is None):
        raise ValueError('give exactly one of num and fraction')
    if num is not None:
        if isinstance(num, bool) or not isinstance(num, int) \
                or not 1 <= num <= total:
            raise ValueError(f'num must be an integer in [1, {total}], '
                             f'got {num!r}')
        return num
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f'fraction must be in (0, 1], got {fraction!r}')
    return max(1, min(total, math.ceil(_exact(fraction) * total)))


def select_global_topk(scores: Mapping[str, Tensor],
                       num: Optional[int] = None,
                       fraction: Optional[Number] = None
                       ) -> SelectionResult:
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
    meta = _layer_meta(scores)
    flat = _concat(scores)
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
        layers[name] = _layer_entry(info, None, indices[name].numel())
        start += info['numel']
    settings = dict(rule='global_topk', num=num, fraction=fraction,
                    threshold=threshold)
    settings.update(_settings_totals(meta, count))
    return SelectionResult(indices=indices, layers=layers,
                           settings=settings)
