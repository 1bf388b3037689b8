"""The selection record: what was selected, how, and a checksum.

One definition of the format.  A :class:`SelectionResult` is what a rule
returns; :func:`build_record` wraps it into the record, a plain dict of
python types and tensors (it travels in checkpoints read with
``torch.load(weights_only=True)``)::

    dict(format='mmtrpts.selection', version=1,
         indices={name: int32 flat indices into param.view(-1)},
         layers={name: per-matrix allocation}, settings={rule settings},
         full=[names trained densely], shapes={name: [sizes]},
         budget={...}, fisher={...}, checksum='sha256...')

This module deliberately imports neither mmengine nor mmpretrain.
"""
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional

import torch
from torch import Tensor

FORMAT = 'mmtrpts.selection'
FORMAT_VERSION = 1
_LAYER_KEYS = ('shape', 'rows', 'cols', 'numel', 'selected')
_INT32_MAX = 2**31 - 1


def to_plain(value: Any, where: str) -> Any:
    """Deep copy into plain python types (tuples become lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise ValueError(f'{where}: key {key!r} is not str/int')
            out[key] = to_plain(item, f'{where}[{key!r}]')
        return out
    if isinstance(value, (list, tuple)):
        return [to_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
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
            layers=to_plain(self.layers, 'layers'),
            settings=to_plain(self.settings, 'settings'))

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
        return cls(indices=out, layers=to_plain(layers, 'layers'),
                   settings=to_plain(data['settings'], 'settings'))


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



def layer_entry(meta: dict, c: Optional[int], selected: int) -> dict:
    """Per-matrix info common to all rules."""
    entry = dict(meta)
    entry.update(c=c, selected=int(selected),
                 density=int(selected) / meta['numel'])
    return entry


def settings_totals(meta: Mapping[str, dict], selected: int) -> dict:
    """Totals recorded in every result's settings."""
    return dict(num_entries=sum(m['numel'] for m in meta.values()),
                num_rows=sum(m['rows'] for m in meta.values()),
                num_selected=int(selected))


def selection_checksum(indices: Dict[str, torch.Tensor]) -> str:
    """SHA-256 over names and index values, independent of dtype/device."""
    digest = hashlib.sha256()
    for name in sorted(indices):
        digest.update(name.encode())
        digest.update(indices[name].to('cpu', torch.int64).numpy().tobytes())
    return digest.hexdigest()


def build_record(result: SelectionResult, full: Iterable[str],
                 shapes: Dict[str, Iterable[int]], **extra) -> dict:
    """Wrap a :class:`SelectionResult` into a checkpoint-safe record."""
    record = result.to_dict()
    record.update(
        full=sorted(full),
        shapes={n: [int(s) for s in shape] for n, shape in shapes.items()},
        checksum=selection_checksum(record['indices']))
    record.update(extra)
    return record


def validate_record(record: dict, shapes: Dict[str, torch.Size],
                    source: Optional[str] = None,
                    roles: Optional[Mapping[str, str]] = None
                    ) -> SelectionResult:
    """Check a record's structure, checksum and fit to the model and run.

    The structure (format, version, indices against ``layers``) is checked
    by :meth:`SelectionResult.from_dict`, the one definition of the format.

    Args:
        record (dict): A record of :func:`build_record`.
        shapes (Dict[str, torch.Size]): The model's parameter shapes.
        source (str, optional): Where the record came from, for messages.
        roles (Mapping[str, str], optional): The run's eligibility role per
            parameter; when given, the record must have been made under the
            same roles (:func:`check_roles`).

    Returns:
        SelectionResult: The record's selection (int64 indices).

    Raises:
        ValueError: naming the source, the key and what was expected.
    """
    where = f' in {source}' if source else ''
    try:
        result = SelectionResult.from_dict(record)
    except ValueError as err:
        raise ValueError(f'{err}{where}') from None
    for key in ('full', 'shapes', 'checksum'):
        if key not in record:
            raise ValueError(f'selection record{where} has no {key!r}')
    for name in list(record['indices']) + list(record['full']):
        if name not in shapes:
            raise ValueError(f'selection record{where} names {name!r}, which '
                             'the model does not have')
    for name, info in result.layers.items():
        if list(shapes[name]) != list(info['shape']):
            raise ValueError(
                f'{name}: the model has shape {list(shapes[name])} but the '
                f'selection record{where} was made for {info["shape"]}')
    if selection_checksum(record['indices']) != record['checksum']:
        raise ValueError(f'selection record{where}: checksum mismatch (the '
                         'indices were modified)')
    if roles is not None:
        check_roles(record, roles, source)
    return result


def check_roles(record: Mapping, roles: Mapping[str, str],
                source: Optional[str] = None) -> None:
    """Check that a record was made under the run's eligibility rules.

    A record made under other rules (e.g. a config with
    ``eligibility=dict(train_norm=True)`` given a record made under the
    defaults) would silently freeze tensors the config trains, or train
    tensors it freezes.  Records store every parameter's role
    (``roles``); older records are compared through ``full`` and the
    masked names.

    Raises:
        ValueError: naming the tensors whose roles differ and both roles.
    """
    where = f' in {source}' if source else ''
    recorded = record.get('roles')
    if recorded is None:
        recorded = {n: 'full' for n in record['full']}
        recorded.update({n: 'masked' for n in record['indices']})
        run = {n: r for n, r in roles.items() if r in ('full', 'masked')}
    else:
        run = dict(roles)
    differ = {n for n in set(recorded) | set(run)
              if recorded.get(n) != run.get(n)}
    if differ:
        detail = '; '.join(
            f'{n}: {recorded.get(n, "absent")} in the record, '
            f'{run.get(n, "absent")} in this run'
            for n in sorted(differ)[:10])
        more = f'; ... ({len(differ) - 10} more)' if len(differ) > 10 else ''
        raise ValueError(
            f'the selection record{where} was made under other eligibility '
            f'rules than this run ({len(differ)} tensors differ: {detail}'
            f'{more}). Use the eligibility settings the record was made '
            'with, or select again')
