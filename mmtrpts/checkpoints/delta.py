"""Delta checkpoints: only what a masked (TR-PTS) run changed (pure torch).

A masked run trains a small fraction of the backbone: the entries named by
the selection record's ``indices`` and the tensors listed in ``full``
(biases, the new head, ...).  Everything else stays bit-identical to the
pretrained base, so the run is fully described by::

    dict(meta=dict(format='mmtrpts.delta', version=1,
                   base_checkpoint=PATH or None, weights='ema' | 'raw',
                   selection_checksum=..., num_sparse_entries=...,
                   num_dense_entries=..., source=...),
         delta=dict(sparse={name: dict(indices=int32, values=tensor)},
                    dense={name: tensor}))

``indices`` are flat indices into ``param.view(-1)``.  A delta holds only
dicts, lists, strings, numbers, booleans, ``None`` and tensors, so it loads
with ``torch.load(weights_only=True)``.  :func:`apply_delta` rebuilds the
full state dict from the base.
"""
import hashlib
from collections import OrderedDict
from typing import Iterable, List, Mapping, Optional

import torch
from torch import Tensor

from ..selection.record import selection_checksum

DELTA_FORMAT = 'mmtrpts.delta'
DELTA_VERSION = 1
_PLAIN_TYPES = (str, int, float, bool, type(None))
_INDEX_DTYPES = (torch.int32, torch.int64)
_MAX_LISTED = 20


def is_delta(checkpoint) -> bool:
    """Whether a loaded checkpoint is a delta checkpoint."""
    return (isinstance(checkpoint, dict)
            and isinstance(checkpoint.get('meta'), dict)
            and checkpoint['meta'].get('format') == DELTA_FORMAT)


def check_plain(obj, where: str = 'value') -> None:
    """Check that ``obj`` loads with ``torch.load(weights_only=True)``.

    Args:
        obj: dicts, lists, tuples, str, int, float, bool, None and plain
            tensors are accepted (numpy scalars are not).
        where (str): Name of ``obj`` in the error message.

    Raises:
        TypeError: naming the offending entry.
    """
    if type(obj) in _PLAIN_TYPES or type(obj) is Tensor:
        return
    if type(obj) in (list, tuple):
        for i, item in enumerate(obj):
            check_plain(item, f'{where}[{i}]')
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise TypeError(f'{where}: key {key!r} is not a str')
            check_plain(value, f'{where}[{key!r}]')
        return
    raise TypeError(f'{where}: {type(obj).__name__} is not allowed in a '
                    'delta checkpoint (it must load with '
                    'torch.load(weights_only=True))')


def _listed(problems: List[str]) -> str:
    text = '; '.join(problems[:_MAX_LISTED])
    if len(problems) > _MAX_LISTED:
        text += f'; ... ({len(problems) - _MAX_LISTED} more)'
    return text


def _check_indices(name: str, idx, numel: int, where: str) -> None:
    if not isinstance(idx, Tensor) or idx.dtype not in _INDEX_DTYPES \
            or idx.dim() != 1:
        raise ValueError(f'{name}: {where} indices must be a 1-D int32/int64 '
                         f'tensor, got {getattr(idx, "dtype", type(idx))}')
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
        raise ValueError(f'{name}: {where} indices out of range '
                         f'[{int(idx.min())}, {int(idx.max())}] for a '
                         f'tensor of {numel} entries')


def _read_selection(selection: Mapping, state_dict: Mapping):
    if not isinstance(selection, Mapping) or 'indices' not in selection \
            or 'full' not in selection:
        raise ValueError('not a selection record: expected a dict with '
                         "'indices' and 'full'")
    indices, full = dict(selection['indices']), list(selection['full'])
    both = sorted(set(indices) & set(full))
    if both:
        raise ValueError(f'selection names {both} both in indices and full')
    missing = [n for n in list(indices) + full if n not in state_dict]
    if missing:
        raise ValueError(f'the state dict has no {missing}, which the '
                         'selection record names (wrong checkpoint?)')
    shapes = selection.get('shapes') or {}
    for name, idx in indices.items():
        shape = list(state_dict[name].shape)
        if name in shapes and list(shapes[name]) != shape:
            raise ValueError(f'{name}: the state dict has shape {shape} but '
                             f'the selection was made for '
                             f'{list(shapes[name])}')
        _check_indices(name, idx, state_dict[name].numel(), 'selection')
    checksum = selection_checksum(indices)
    if selection.get('checksum') not in (None, checksum):
        raise ValueError('selection record: checksum mismatch (the indices '
                         'were modified)')
    return indices, full, checksum


def _verify_against_base(state_dict: Mapping, indices: Mapping, full: List,
                         base: Mapping) -> None:
    """Raise if the delta would lose a change relative to ``base``."""
    problems, full = [], set(full)
    for name, value in state_dict.items():
        if name in full or not isinstance(value, Tensor):
            continue
        if name not in base:
            problems.append(f'{name} (not in the base checkpoint and not '
                            "in the selection's full list)")
            continue
        value, ref = value.detach().cpu(), base[name].detach().cpu()
        if value.shape != ref.shape or value.dtype != ref.dtype:
            problems.append(f'{name} ({value.dtype} {list(value.shape)} vs '
                            f'{ref.dtype} {list(ref.shape)} in the base)')
        elif name in indices:
            frozen = torch.ones(value.numel(), dtype=torch.bool)
            frozen[indices[name].detach().cpu().long()] = False
            a, b = value.reshape(-1)[frozen], ref.reshape(-1)[frozen]
            if not torch.equal(a, b):
                problems.append(f'{name} ({int((a != b).sum())} entries '
                                'outside the selection changed)')
        elif not torch.equal(value, ref):
            problems.append(f'{name} (changed, but neither selected nor in '
                            'full)')
    if problems:
        raise ValueError('the state dict differs from the base checkpoint '
                         'outside the selection, the delta would lose: ' +
                         _listed(problems))


def base_digest(base_state_dict: Mapping[str, Tensor],
                exclude: Iterable[str] = ()) -> str:
    """sha256 of a base's tensors: names, dtypes, shapes and bytes.

    A content hash of the state dict (not of the file), so a base re-saved
    in another container still matches.  ``exclude`` names tensors that a
    delta replaces densely (their base values do not matter).
    """
    skip = set(exclude)
    digest = hashlib.sha256()
    for name in sorted(base_state_dict):
        value = base_state_dict[name]
        if name in skip or not isinstance(value, Tensor):
            continue
        value = value.detach().to('cpu').contiguous()
        digest.update(f'{name}|{value.dtype}|{list(value.shape)}|'.encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def changed_entries(state_dict: Mapping[str, Tensor],
                    base_state_dict: Mapping[str, Tensor],
                    max_sparse_fraction: float = 0.5) -> dict:
    """A selection record of what a trained state dict changed.

    For runs that carry no selection record (SPT, RLRR, Sparse-Tuning,
    full fine-tuning), the record :func:`make_delta` needs is read off the
    weights: a tensor absent from the base, or of another shape or dtype,
    is stored in full; a tensor of the base with at most
    ``max_sparse_fraction`` of its entries changed is stored as those
    entries (SPT's unstructured part), one with more in full; an unchanged
    tensor is left out.  The delta is exact by construction.

    Args:
        state_dict (Mapping[str, Tensor]): The trained model's state dict.
        base_state_dict (Mapping[str, Tensor]): Its pretrained base.
        max_sparse_fraction (float): Above this fraction of changed
            entries a tensor is stored densely. Defaults to 0.5.

    Returns:
        dict: ``indices`` (int32 flat indices), ``full`` and ``shapes``.
    """
    indices, full, shapes = {}, [], {}
    for name, value in state_dict.items():
        if not isinstance(value, Tensor):
            continue
        ref = base_state_dict.get(name)
        if (not isinstance(ref, Tensor) or ref.shape != value.shape
                or ref.dtype != value.dtype):
            full.append(name)
            continue
        changed = (value.detach().cpu().reshape(-1) !=
                   ref.detach().cpu().reshape(-1)).nonzero().flatten()
        if changed.numel() == 0:
            continue
        if changed.numel() > max_sparse_fraction * value.numel():
            full.append(name)
            continue
        indices[name] = changed.to(torch.int32)
        shapes[name] = list(value.shape)
    return dict(indices=indices, full=sorted(full), shapes=shapes)


def make_delta(state_dict: Mapping[str, Tensor],
               selection: Mapping,
               base_state_dict: Optional[Mapping[str, Tensor]] = None,
               weights: str = 'state_dict',
               source=None,
               base_checkpoint: Optional[str] = None) -> dict:
    """Build a delta checkpoint from a trained state dict and its selection.

    Args:
        state_dict (Mapping[str, Tensor]): The trained model's state dict.
        selection (Mapping): The selection record (``indices``, ``full``,
            optionally ``shapes`` and ``checksum``, which are checked).
        base_state_dict (Mapping[str, Tensor], optional): The pretrained
            base.  When given, every tensor outside the selection must equal
            it exactly and tensors absent from it must be in ``full``;
            without it nothing outside the selection is checked.
        weights (str): Which weight set this is (e.g. ``'ema'``, ``'raw'``),
            recorded in the meta.
        source: Where the weights came from (plain python values only).
        base_checkpoint (str, optional): Path of the base checkpoint,
            recorded in the meta for loading.  With ``base_state_dict`` the
            meta also records :func:`base_digest` of the base, which
            :func:`apply_delta` checks.

    Returns:
        dict: The delta checkpoint (see the module docstring).

    Raises:
        ValueError: The selection does not fit the state dict, or the state
            dict changed outside the selection.
        TypeError: ``source`` or ``weights`` are not plain python values.
    """
    indices, full, checksum = _read_selection(selection, state_dict)
    # Non-floating state (bool/int buffers such as a TokenKeepFuseViT's
    # keep_layer_mask, chosen after the Fisher pass) is never trained but
    # belongs to the fine-tuned model: always export it densely.
    full = sorted(set(full) | {
        name for name, value in state_dict.items()
        if isinstance(value, Tensor) and not value.is_floating_point()
        and name not in indices
    })
    if base_state_dict is not None:
        _verify_against_base(state_dict, indices, full, base_state_dict)
    sparse = OrderedDict()
    for name in sorted(indices):
        idx = indices[name].detach().to('cpu', torch.int32).contiguous()
        flat = state_dict[name].detach().cpu().reshape(-1)
        sparse[name] = dict(
            indices=idx.clone(), values=flat[idx.long()].clone())
    dense = OrderedDict((name, state_dict[name].detach().cpu().clone(
        memory_format=torch.contiguous_format)) for name in sorted(full))
    meta = dict(
        format=DELTA_FORMAT,
        version=DELTA_VERSION,
        base_checkpoint=base_checkpoint,
        weights=weights,
        selection_checksum=checksum,
        num_sparse_entries=sum(e['indices'].numel() for e in sparse.values()),
        num_dense_entries=sum(t.numel() for t in dense.values()),
        base_digest=(None if base_state_dict is None else base_digest(
            base_state_dict, exclude=dense)),
        source=source)
    check_plain(meta, 'meta')
    return dict(meta=meta, delta=dict(sparse=sparse, dense=dense))


def _read_delta(delta) -> tuple:
    if not is_delta(delta):
        raise ValueError('not a delta checkpoint: expected a dict with '
                         f"meta.format={DELTA_FORMAT!r}")
    version = delta['meta'].get('version')
    if version != DELTA_VERSION:
        raise ValueError(f'delta checkpoint version {version!r} is not '
                         f'supported (expected {DELTA_VERSION})')
    body = delta.get('delta')
    if not isinstance(body, dict):
        raise ValueError("delta checkpoint has no 'delta' dict")
    return body.get('sparse') or {}, body.get('dense') or {}


def _scatter(name: str, entry, ref: Tensor) -> Tensor:
    if not isinstance(entry, dict) or 'indices' not in entry \
            or 'values' not in entry:
        raise ValueError(f"{name}: sparse entry needs 'indices' and "
                         "'values'")
    idx, values = entry['indices'], entry['values']
    _check_indices(name, idx, ref.numel(), 'delta')
    if not isinstance(values, Tensor) or values.dim() != 1 \
            or values.numel() != idx.numel():
        raise ValueError(f'{name}: the delta has {idx.numel()} indices but '
                         f'{getattr(values, "shape", type(values))} values')
    if values.dtype != ref.dtype:
        raise ValueError(f'{name}: delta values are {values.dtype} but the '
                         f'base tensor is {ref.dtype}')
    out = ref.detach().clone(memory_format=torch.contiguous_format)
    out.view(-1)[idx.to(out.device).long()] = values.to(out.device)
    return out


def apply_delta(base_state_dict: Mapping[str, Tensor],
                delta: Mapping,
                force: bool = False) -> 'OrderedDict[str, Tensor]':
    """Merge a delta checkpoint into its base state dict.

    The base is not modified; tensors the delta does not touch are shared
    with it.

    Args:
        base_state_dict (Mapping[str, Tensor]): The base's state dict.
        delta (Mapping): A delta checkpoint made by :func:`make_delta`.
        force (bool): Apply the delta although the base's content differs
            from the one it was made on (``meta.base_digest``).  Default:
            refuse.

    Returns:
        OrderedDict[str, Tensor]: The base with the sparse values scattered
        in and the dense tensors set (which may add keys, e.g. the head).

    Raises:
        ValueError: naming the tensor and the problem (wrong format or
            version, tensor missing from the base, index out of range,
            value count or dtype mismatch, checksum mismatch, a base with
            other content than the delta was made on).
    """
    sparse, dense = _read_delta(delta)
    expected_base = delta['meta'].get('base_digest')
    if expected_base is not None and not force:
        found_base = base_digest(base_state_dict, exclude=dense)
        if found_base != expected_base:
            raise ValueError(
                'the delta was made on another base checkpoint (content '
                f'sha256 {expected_base[:12]}; this base: {found_base[:12]}'
                f', recorded path {delta["meta"].get("base_checkpoint")!r}):'
                ' applying it would give weights that were never trained. '
                'Use the base it was made on, or force (merge.py delta '
                '--force) if you know the difference is irrelevant')
    merged = OrderedDict(base_state_dict)
    metadata = getattr(base_state_dict, '_metadata', None)
    if metadata is not None:
        merged._metadata = metadata
    for name, entry in sparse.items():
        if name not in base_state_dict:
            raise ValueError(f'{name}: the delta has sparse values for it but '
                             'the base checkpoint has no such tensor (wrong '
                             'base checkpoint?)')
        merged[name] = _scatter(name, entry, base_state_dict[name])
    for name, tensor in dense.items():
        if name in sparse:
            raise ValueError(f'{name}: both sparse and dense in the delta')
        if not isinstance(tensor, Tensor):
            raise ValueError(f'{name}: dense entry is not a tensor')
        ref = base_state_dict.get(name)
        if ref is not None and (ref.shape != tensor.shape
                                or ref.dtype != tensor.dtype):
            raise ValueError(
                f'{name}: the delta has {tensor.dtype} {list(tensor.shape)} '
                f'but the base has {ref.dtype} {list(ref.shape)} (wrong '
                'base checkpoint?)')
        merged[name] = tensor
    expected = delta['meta'].get('selection_checksum')
    found = selection_checksum({n: e['indices'] for n, e in sparse.items()})
    if expected is not None and expected != found:
        raise ValueError('delta checkpoint: selection checksum mismatch (the '
                         'sparse indices were modified)')
    return merged


def merged_meta(delta_meta: Mapping,
                delta_path: Optional[str] = None,
                base_path: Optional[str] = None) -> dict:
    """The meta of a dense checkpoint merged from a delta.

    It keeps the delta's meta (``dataset_meta``, ``source``, ...) but not
    its ``format`` and ``version``: the merged file is no delta.

    Args:
        delta_meta (Mapping): The delta's meta.
        delta_path (str, optional): Where the delta was read from.
        base_path (str, optional): Where the base was read from.

    Returns:
        dict: The meta, with ``merged_from=dict(format, version, delta,
        base)``.
    """
    meta = {
        k: v
        for k, v in delta_meta.items() if k not in ('format', 'version')
    }
    meta['merged_from'] = dict(
        format=delta_meta.get('format'),
        version=delta_meta.get('version'),
        delta=delta_path,
        base=base_path)
    return meta


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def delta_size_report(delta: Mapping,
                      dense_state_dict: Mapping[str, Tensor]) -> dict:
    """Tensor bytes of a delta versus those of the dense state dict.

    Args:
        delta (Mapping): A delta checkpoint.
        dense_state_dict (Mapping[str, Tensor]): The full state dict it
            replaces.

    Returns:
        dict: ``delta_bytes`` (= ``sparse_index_bytes`` +
        ``sparse_value_bytes`` + ``full_tensor_bytes``), ``dense_bytes`` and
        ``fraction`` = delta_bytes / dense_bytes.
    """
    sparse, dense = _read_delta(delta)
    index_bytes = sum(_nbytes(e['indices']) for e in sparse.values())
    value_bytes = sum(_nbytes(e['values']) for e in sparse.values())
    full_bytes = sum(_nbytes(t) for t in dense.values())
    delta_bytes = index_bytes + value_bytes + full_bytes
    dense_bytes = sum(
        _nbytes(t) for t in dense_state_dict.values() if isinstance(t, Tensor))
    fraction = delta_bytes / dense_bytes if dense_bytes else float('nan')
    return dict(
        delta_bytes=delta_bytes,
        sparse_index_bytes=index_bytes,
        sparse_value_bytes=value_bytes,
        full_tensor_bytes=full_bytes,
        dense_bytes=dense_bytes,
        fraction=fraction)
