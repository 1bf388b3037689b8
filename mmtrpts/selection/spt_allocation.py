"""SPT's sensitivity-based allocation (pure torch).

He et al., *Sensitivity-Aware Visual Parameter-Efficient Fine-Tuning*,
ICCV 2023 (docs/methods/spt.md §1).  One global ranking of the sensitivity
scores (the batch-level empirical Fisher of :mod:`mmtrpts.selection.fisher`)
is swept over ``tau`` = ``tau_step, 2 * tau_step, ... <= tau_max`` sensitive
entries; for each ``tau`` every scored tensor is classified:

* a **matrix** with ``n`` sensitive entries is *structured* (a LoRA or an
  Adapter of rank ``r`` over the whole matrix, ``P`` parameters) if
  ``n >= P / alpha``, otherwise its ``n`` entries are *unstructured*;
* a **vector** is *fully* tuned if ``n >= len / beta``, otherwise its ``n``
  entries are unstructured.

The reported total is structured + full vectors + unstructured + the
[CLS] token (the head is not counted); the ``tau`` whose total is closest
to the target wins, ties going to the later ``tau``.

Scored tensors are every parameter except those whose names contain
``head``, ``cls_token``, ``patch_embed`` or ``pos_embed``.  MMPretrain fuses
q, k and v into ``attn.qkv``: its weight and bias are scored and classified
as three equal row slices ``[q]``, ``[k]``, ``[v]`` (docs/methods/spt.md §2),
so every *unit* below is a parameter or one row slice of it.

The allocation is a plain dict of python types and tensors (loadable with
``torch.load(weights_only=True)``)::

    dict(format='mmtrpts.spt_allocation', version=1,
         settings=dict(structured_type, rank, alpha, beta, tau_step,
                       tau_max, structured_only),
         shapes={param: [sizes]},             # every scored parameter
         units={unit: dict(param, label, rows, shape, sensitive, threshold,
                           size, mode)},      # mode: structured / full /
                                              # unstructured / none
         structured=[unit, ...], full_vectors=[unit, ...],
         unstructured={param: int32 flat indices into param.view(-1)},
         counts=dict(structured, vectors, unstructured, cls_token, total,
                     target, tau),
         sweep=dict(taus=[...], totals=[...]), checksum='sha256...')

This module deliberately imports neither mmengine nor mmpretrain.
"""
import hashlib
import math
from collections import OrderedDict
from fractions import Fraction
from typing import Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .record import selection_checksum
from .topk import kth_largest

FORMAT = 'mmtrpts.spt_allocation'
FORMAT_VERSION = 1
STRUCTURED_TYPES = ('lora', 'adapter')
EXCLUDED = ('head', 'cls_token', 'patch_embed', 'pos_embed')
FUSED_SUFFIXES = ('attn.qkv.weight', 'attn.qkv.bias')
FUSED_LABELS = ('q', 'k', 'v')
WHOLE = 'all'
MODES = ('structured', 'full', 'unstructured', 'none')
_KEYS = ('settings', 'shapes', 'units', 'structured', 'full_vectors',
         'unstructured', 'counts', 'checksum')


class SPTUnit(NamedTuple):
    """A scored matrix or vector: a parameter or one row slice of it.

    Attributes:
        param (str): Parameter name.
        label (str): ``'all'`` or the fused slice ``'q'``/``'k'``/``'v'``.
        start (int): First row of the slice.
        stop (int): One past its last row.
        cols (int): Columns (1 for a vector).
        kind (str): ``'matrix'`` or ``'vector'``.
    """
    param: str
    label: str
    start: int
    stop: int
    cols: int
    kind: str

    @property
    def name(self) -> str:
        return self.param if self.label == WHOLE else \
            f'{self.param}[{self.label}]'

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def numel(self) -> int:
        return self.rows * self.cols

    @property
    def flat_range(self) -> Tuple[int, int]:
        """Flat indices ``[a, b)`` of the unit in ``param.view(-1)``."""
        return self.start * self.cols, self.stop * self.cols


def is_scored(name: str) -> bool:
    """Whether SPT scores a parameter (everything but the excluded)."""
    return not any(key in name for key in EXCLUDED)


def slice_rows(label: str, rows: int) -> Tuple[int, int]:
    """Row range ``[start, stop)`` of a slice label in a tensor of
    ``rows`` rows: ``'all'`` or the ``q``/``k``/``v`` third."""
    if label == WHOLE:
        return 0, rows
    if label not in FUSED_LABELS:
        raise ValueError(f'unknown slice label {label!r}; expected '
                         f'{WHOLE!r} or one of {FUSED_LABELS}')
    if rows % len(FUSED_LABELS):
        raise ValueError(f'a fused qkv tensor needs a multiple of 3 rows, '
                         f'got {rows}')
    size = rows // len(FUSED_LABELS)
    index = FUSED_LABELS.index(label)
    return index * size, (index + 1) * size


def spt_units(shapes: Mapping[str, Sequence[int]]
              ) -> 'OrderedDict[str, SPTUnit]':
    """The units SPT scores, in parameter order.

    Args:
        shapes (Mapping[str, Sequence[int]]): Parameter name -> shape.
            Excluded parameters (head, cls_token, patch_embed, pos_embed)
            are skipped.

    Returns:
        OrderedDict: unit name -> :class:`SPTUnit`.

    Raises:
        ValueError: For a scored parameter that is neither 1-D nor 2-D.
    """
    units = OrderedDict()
    for param, shape in shapes.items():
        if not is_scored(param):
            continue
        shape = [int(s) for s in shape]
        if len(shape) not in (1, 2):
            raise ValueError(f'{param}: SPT scores matrices and vectors only, '
                             f'got shape {shape}')
        kind = 'matrix' if len(shape) == 2 else 'vector'
        cols = shape[1] if kind == 'matrix' else 1
        fused = param.endswith(FUSED_SUFFIXES)
        for label in FUSED_LABELS if fused else (WHOLE, ):
            start, stop = slice_rows(label, shape[0])
            unit = SPTUnit(param, label, start, stop, cols, kind)
            units[unit.name] = unit
    return units


def structured_size(unit: SPTUnit, structured_type: str, rank: int) -> int:
    """Parameters of the structured module of a matrix unit
    (docs/methods/spt.md §1).

    LoRA: ``in * r + r * out``; Adapter (on the output dimension):
    ``out * r + r * out + r + out``.
    """
    if structured_type == 'lora':
        return unit.cols * rank + rank * unit.rows
    if structured_type == 'adapter':
        return 2 * unit.rows * rank + rank + unit.rows
    raise ValueError(f'structured_type must be one of {STRUCTURED_TYPES}, '
                     f'got {structured_type!r}')


def _ceil_ratio(numerator: int, denominator) -> int:
    """``ceil(numerator / denominator)``, exact for decimal denominators."""
    return math.ceil(Fraction(numerator) / Fraction(repr(denominator)))


def unit_threshold(unit: SPTUnit, structured_type: str, rank: int,
                   alpha: float, beta: float) -> Tuple[int, int]:
    """``(threshold, size)``: the fewest sensitive entries that make a
    matrix structured (``ceil(P / alpha)``) or a vector full
    (``ceil(len / beta)``), and the parameters that then cost."""
    if unit.kind == 'matrix':
        size = structured_size(unit, structured_type, rank)
        return _ceil_ratio(size, alpha), size
    return _ceil_ratio(unit.numel, beta), unit.numel


def _check_args(target: int, structured_type: str, rank: int, alpha: float,
                beta: float, tau_step: int, tau_max: int) -> None:
    if structured_type not in STRUCTURED_TYPES:
        raise ValueError(f'structured_type must be one of '
                         f'{STRUCTURED_TYPES}, got {structured_type!r}')
    for name, value in dict(target=target, rank=rank, tau_step=tau_step,
                            tau_max=tau_max).items():
        if isinstance(value, bool) or not isinstance(value, int) \
                or value < 1:
            raise ValueError(f'{name} must be a positive integer, got '
                             f'{value!r}')
    for name, value in dict(alpha=alpha, beta=beta).items():
        if not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f'{name} must be > 0, got {value!r}')


def _check_scores(scores: Mapping[str, Tensor],
                  units: Mapping[str, SPTUnit]) -> None:
    if not scores:
        raise ValueError('scores must be a non-empty dict name -> tensor')
    scored = {u.param for u in units.values()}
    for name, s in scores.items():
        if name not in scored:
            raise ValueError(f'scores[{name!r}]: SPT does not score this '
                             f'parameter (names containing {EXCLUDED} are '
                             'excluded)')
        if not s.is_floating_point() or not bool(torch.isfinite(s).all()) \
                or bool((s < 0).any()):
            raise ValueError(f'scores[{name!r}] must be finite, '
                             'non-negative floats')


def _taus(tau_step: int, tau_max: int, num_entries: int) -> Tensor:
    if tau_step > min(tau_max, num_entries):
        raise ValueError(f'tau_step={tau_step} exceeds min(tau_max, scored '
                         f'entries) = {min(tau_max, num_entries)}: no budget '
                         'to sweep')
    return torch.arange(tau_step, min(tau_max, num_entries) + 1, tau_step)


class _Ranking:
    """The global top-``count`` entries of all scores, looked up per unit.

    Ties go to the lower position (parameter order, then flat index).
    """

    def __init__(self, scores: Mapping[str, Tensor], count: int):
        self.offsets, start = {}, 0
        for name, s in scores.items():
            self.offsets[name] = start
            start += s.numel()
        flat = torch.cat([s.detach().reshape(-1).float().cpu()
                          for s in scores.values()])
        threshold = kth_largest(flat, count)
        above = (flat > threshold).nonzero().squeeze(1)
        ties = (flat == threshold).nonzero().squeeze(1)
        chosen = torch.cat([above, ties[:count - above.numel()]]).sort().values
        order = torch.sort(flat[chosen], descending=True, stable=True).indices
        # chosen positions in ascending order, and the rank of each
        self.positions, self.ranks = torch.sort(chosen[order])

    def lookup(self, unit: SPTUnit) -> Tuple[Tensor, Tensor]:
        """Ranks of the unit's ranked entries and their flat indices into
        ``param.view(-1)``."""
        base = self.offsets[unit.param]
        first, last = unit.flat_range
        lo = int(torch.searchsorted(self.positions, base + first))
        hi = int(torch.searchsorted(self.positions, base + last))
        return self.ranks[lo:hi], self.positions[lo:hi] - base


def _costs(big: Tensor, counts: Tensor, size: int,
           keep_small: bool) -> Tensor:
    """Per-tau cost of a unit: ``size`` where it is structured / full,
    else its sensitive count (0 when unstructured entries are dropped)."""
    small = counts if keep_small else torch.zeros_like(counts)
    return torch.where(big, torch.full_like(counts, size), small)


def allocate_spt(scores: Mapping[str, Tensor], target: int,
                 structured_type: str = 'lora', rank: int = 8,
                 alpha: float = 10, beta: float = 5, tau_step: int = 20_000,
                 tau_max: int = 1_580_000, cls_token: int = 768,
                 structured_only: bool = False) -> dict:
    """SPT's allocation closest to a parameter budget.

    Args:
        scores (Mapping[str, Tensor]): Parameter name -> non-negative
            sensitivity of every scored parameter (see :func:`spt_units`),
            in parameter order (ties are broken by it).
        target (int): Budget in parameters (e.g. 400_000 for SPT's 0.4M).
        structured_type (str): ``'lora'`` or ``'adapter'``: the structured
            module, whose size sets the matrix threshold.
        rank (int): Rank ``r`` of the structured modules. Defaults to 8.
        alpha (float): Matrix threshold divisor. Defaults to 10.
        beta (float): Vector threshold divisor. Defaults to 5.
        tau_step (int): Step of the sweep over sensitive-entry counts.
            Defaults to SPT's 0.02M.
        tau_max (int): Largest ``tau`` swept (clipped to the number of
            scored entries). Defaults to SPT's 1.58M.
        cls_token (int): Parameters always trained and counted (the [CLS]
            token: 768 for ViT-B).
        structured_only (bool): Drop the unstructured entries (SPT's
            ``--structured_only``).

    Returns:
        dict: The allocation (see the module docstring).
    """
    _check_args(target, structured_type, rank, alpha, beta, tau_step,
                tau_max)
    units = spt_units({n: s.shape for n, s in scores.items()})
    _check_scores(scores, units)
    taus = _taus(tau_step, tau_max, sum(s.numel() for s in scores.values()))
    ranking = _Ranking(scores, int(taus[-1]))
    found = {name: ranking.lookup(unit) for name, unit in units.items()}
    limits = {
        name: unit_threshold(unit, structured_type, rank, alpha, beta)
        for name, unit in units.items()
    }

    totals = torch.full_like(taus, cls_token)
    for name, (ranks, _) in found.items():
        counts = torch.searchsorted(ranks.sort().values, taus)
        threshold, size = limits[name]
        totals += _costs(counts >= threshold, counts, size,
                         not structured_only)
    diff = (totals - target).abs()
    best = len(taus) - 1 - int(torch.argmin(diff.flip(0)))  # ties: later
    tau = int(taus[best])

    info, unstructured = OrderedDict(), {}
    structured, full_vectors = [], []
    counts = dict(structured=0, vectors=0, unstructured=0)
    for name, unit in units.items():
        ranks, indices = found[name]
        sensitive = ranks < tau
        n = int(sensitive.sum())
        threshold, size = limits[name]
        if n >= threshold and unit.kind == 'matrix':
            mode = 'structured'
            structured.append(name)
            counts['structured'] += size
        elif n >= threshold:
            mode = 'full'
            full_vectors.append(name)
            counts['vectors'] += size
        elif n and not structured_only:
            mode = 'unstructured'
            unstructured.setdefault(unit.param, []).append(indices[sensitive])
            counts['unstructured'] += n
        else:
            mode = 'none'
        info[name] = dict(param=unit.param, label=unit.label,
                          rows=[unit.start, unit.stop],
                          shape=[unit.rows, unit.cols] if unit.kind ==
                          'matrix' else [unit.rows], sensitive=n,
                          threshold=threshold, size=size, mode=mode)
    unstructured = {
        param: torch.cat(parts).sort().values.to(torch.int32)
        for param, parts in unstructured.items()
    }
    counts.update(cls_token=cls_token, target=target, tau=tau)
    counts['total'] = (counts['structured'] + counts['vectors'] +
                       counts['unstructured'] + cls_token)
    assert counts['total'] == int(totals[best])
    allocation = dict(
        format=FORMAT, version=FORMAT_VERSION,
        settings=dict(structured_type=structured_type, rank=rank,
                      alpha=alpha, beta=beta, tau_step=tau_step,
                      tau_max=tau_max, structured_only=structured_only),
        shapes={n: [int(d) for d in s.shape] for n, s in scores.items()},
        units=info, structured=structured, full_vectors=full_vectors,
        unstructured=unstructured, counts=counts,
        sweep=dict(taus=taus.tolist(), totals=totals.tolist()))
    allocation['checksum'] = allocation_checksum(allocation)
    return allocation


def allocation_checksum(allocation: Mapping) -> str:
    """SHA-256 over the structure an allocation gives a model: module type
    and rank, structured units, full vectors and unstructured indices."""
    settings = allocation['settings']
    digest = hashlib.sha256()
    for part in (settings['structured_type'], str(settings['rank']),
                 *sorted(allocation['structured']), '|',
                 *sorted(allocation['full_vectors']), '|',
                 selection_checksum(allocation['unstructured'])):
        digest.update(part.encode())
        digest.update(b'\0')
    return digest.hexdigest()


def _check_units(allocation: Mapping, where: str) -> None:
    units, shapes = allocation['units'], allocation['shapes']
    expected = spt_units(shapes)
    if list(units) != list(expected):
        raise ValueError(f'{where}: units do not match the scored tensors of '
                         'shapes')
    for key, mode in (('structured', 'structured'), ('full_vectors', 'full')):
        for name in allocation[key]:
            if name not in units or units[name]['mode'] != mode:
                raise ValueError(f'{where}: {key} names {name!r}, which is '
                                 f"not a unit with mode={mode!r}")
    for param, idx in allocation['unstructured'].items():
        if param not in shapes:
            raise ValueError(f'{where}: unstructured names {param!r}, which '
                             'is not a scored tensor')
        numel = math.prod(shapes[param])
        if not isinstance(idx, Tensor) or idx.dim() != 1 or idx.dtype not in \
                (torch.int32, torch.int64):
            raise ValueError(f'{where}: unstructured[{param!r}] must be a '
                             '1-D int32/int64 tensor')
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel
                            or not bool((idx[1:] > idx[:-1]).all())):
            raise ValueError(f'{where}: unstructured[{param!r}] must be '
                             f'strictly ascending indices in [0, {numel})')


def validate_allocation(allocation, source: Optional[str] = None) -> None:
    """Check the format, the units and the checksum of an allocation.

    Raises:
        ValueError: naming the source, the key and what was expected.
    """
    where = f'SPT allocation {source}' if source else 'SPT allocation'
    if not isinstance(allocation, Mapping) or \
            allocation.get('format') != FORMAT:
        raise ValueError(f'{where}: not an SPT allocation (expected a dict '
                         f'with format={FORMAT!r}; write one with '
                         'tools/compute_sensitivity.py)')
    if allocation.get('version') != FORMAT_VERSION:
        raise ValueError(f'{where}: version {allocation.get("version")!r} is '
                         f'not supported (expected {FORMAT_VERSION})')
    missing = [k for k in _KEYS if k not in allocation]
    if missing:
        raise ValueError(f'{where}: missing keys {missing}')
    if allocation['settings'].get('structured_type') not in STRUCTURED_TYPES:
        raise ValueError(f'{where}: settings.structured_type must be one of '
                         f'{STRUCTURED_TYPES}, got '
                         f'{allocation["settings"].get("structured_type")!r}')
    _check_units(allocation, where)
    if allocation_checksum(allocation) != allocation['checksum']:
        raise ValueError(f'{where}: checksum mismatch (the allocation was '
                         'modified)')


def trainable_indices(allocation: Mapping) -> Dict[str, Tensor]:
    """Flat indices of the entries an allocation trains *in place*: full
    vectors (or their slices) and unstructured entries, per parameter.

    Returns:
        dict: parameter name -> ascending int64 indices into
        ``param.view(-1)``; structured matrices are not included (their
        modules are new parameters).
    """
    parts = {}
    for name in allocation['full_vectors']:
        unit = allocation['units'][name]
        parts.setdefault(unit['param'], []).append(
            torch.arange(*unit['rows'], dtype=torch.int64, device='cpu'))
    for param, idx in allocation['unstructured'].items():
        parts.setdefault(param, []).append(idx.to(torch.int64))
    return {param: torch.cat(p).unique() for param, p in parts.items()}
