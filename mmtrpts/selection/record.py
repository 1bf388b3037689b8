"""The selection record: what was selected, how, and a checksum.

A record is a plain dict of python types and tensors (it travels in
checkpoints read with ``torch.load(weights_only=True)``)::

    dict(format='mmtrpts.selection', version=1,
         indices={name: int32 flat indices into param.view(-1)},
         layers={name: per-matrix allocation}, settings={rule settings},
         full=[names trained densely], shapes={name: [sizes]},
         budget={...}, fisher={...}, checksum='sha256...')
"""
import hashlib
from typing import Dict, Iterable, Optional

import torch

from .rules import FORMAT, FORMAT_VERSION, SelectionResult


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
                    source: Optional[str] = None) -> None:
    """Check a record against the model's parameter shapes.

    Raises:
        ValueError: naming the source, the key and what was expected.
    """
    where = f' in {source}' if source else ''
    if not isinstance(record, dict) or record.get('format') != FORMAT:
        raise ValueError(f'not a selection record{where}: expected a dict '
                         f"with format={FORMAT!r}")
    if record.get('version') != FORMAT_VERSION:
        raise ValueError(f'selection record version {record.get("version")}'
                         f'{where} is not supported (expected '
                         f'{FORMAT_VERSION})')
    for key in ('indices', 'full', 'shapes', 'checksum'):
        if key not in record:
            raise ValueError(f'selection record{where} has no {key!r}')
    for name in list(record['indices']) + list(record['full']):
        if name not in shapes:
            raise ValueError(f'selection record{where} names {name!r}, which '
                             'the model does not have')
    for name, idx in record['indices'].items():
        expected = list(record['shapes'][name])
        if list(shapes[name]) != expected:
            raise ValueError(
                f'{name}: the model has shape {list(shapes[name])} but the '
                f'selection record{where} was made for {expected}')
        numel = int(torch.Size(expected).numel())
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
            raise ValueError(f'{name}: selection indices{where} out of range '
                             f'for {numel} entries')
    if selection_checksum(record['indices']) != record['checksum']:
        raise ValueError(f'selection record{where}: checksum mismatch (the '
                         'indices were modified)')

