"""Turn a training checkpoint into a delta checkpoint (pure torch).

The one home of the export that ``tools/model_converters/export_delta.py``
and the zoo publisher (``tools/misc/publish_zoo.py``) both run: pick the
weight set (EMA or raw), take the run's selection record or, without one,
read the changed entries off the weights (:func:`~.delta.changed_entries`),
and build the delta with its provenance and ``dataset_meta``.
"""
import os.path as osp
from typing import Mapping, Optional, Tuple

from torch import Tensor

from .delta import changed_entries, check_plain, make_delta

__all__ = ['choose_weights', 'describe_source', 'export_checkpoint']


def choose_weights(checkpoint: dict, which: str) -> Tuple[dict, str, str,
                                                          str]:
    """Return ``(state_dict, label, key, message)`` for a weight set.

    Args:
        checkpoint (dict): A runner checkpoint.
        which (str): ``'state_dict'`` (``checkpoint['state_dict']``: the EMA
            weights when the run used ``EMAHook``) or ``'raw'`` (the trained
            weights).

    Returns:
        tuple: The state dict, ``'ema'`` or ``'raw'``, the checkpoint key
        read and a sentence saying which weights these are.
    """
    if which not in ('state_dict', 'raw'):
        raise ValueError(f"weights {which!r}: expected 'state_dict' or 'raw'")
    if 'ema_state_dict' not in checkpoint:
        return (checkpoint['state_dict'], 'raw', 'state_dict',
                "exporting checkpoint['state_dict']: the trained weights "
                '(no EMA in this checkpoint)')
    if which == 'state_dict':
        return (checkpoint['state_dict'], 'ema', 'state_dict',
                "exporting checkpoint['state_dict']: the EMA weights "
                '(EMAHook swapped them in; --weights raw exports the '
                'trained ones)')
    # EMAHook stores the raw weights under the averaged model's 'module.'
    # prefix, next to its 'steps' buffer.
    ema = checkpoint['ema_state_dict']
    raw = {k[7:]: v for k, v in ema.items() if k.startswith('module.')}
    return (raw or dict(ema), 'raw', 'ema_state_dict',
            "exporting checkpoint['ema_state_dict']: the raw (non-EMA) "
            'trained weights')


def describe_source(path: str, checkpoint: dict, key: str) -> dict:
    """Plain-python provenance of the exported weights."""
    meta = checkpoint.get('meta') or {}
    source = dict(checkpoint=osp.abspath(path), weights_key=key)
    for name in ('epoch', 'iter'):
        if meta.get(name) is not None:
            source[name] = int(meta[name])
    for name in ('experiment_name', 'mmengine_version', 'time'):
        if isinstance(meta.get(name), str):
            source[name] = meta[name]
    return source


def export_checkpoint(checkpoint: dict,
                      path: str,
                      base_state_dict: Optional[Mapping[str, Tensor]] = None,
                      base_checkpoint: Optional[str] = None,
                      weights: str = 'state_dict') -> Tuple[dict, dict, str]:
    """Build the delta checkpoint of a runner checkpoint.

    Args:
        checkpoint (dict): The loaded runner checkpoint.
        path (str): Its file (recorded as the source).
        base_state_dict (Mapping[str, Tensor], optional): The pretrained
            base: with a selection record, every tensor outside it must
            equal the base; without one, it is what the changes are read
            against (then required).
        base_checkpoint (str, optional): The base path to record in the
            delta's meta (where loading will look for it).
        weights (str): See :func:`choose_weights`.

    Returns:
        tuple: ``(delta, state_dict, message)``: the delta, the exported
        state dict and the sentences to print (weights, dataset_meta).

    Raises:
        ValueError: no selection record and no base, or the state dict
            changed outside the selection.
    """
    state_dict, label, key, message = choose_weights(checkpoint, weights)
    selection = checkpoint.get('selection')
    if selection is None:
        if base_state_dict is None:
            raise ValueError(
                f'{path} has no selection record (it was not trained by '
                'FisherSelectionHook); its changes can only be read against '
                'the base: give the base checkpoint')
        selection = changed_entries(state_dict, base_state_dict)
        message += ('; no selection record: the delta holds the entries '
                    'that differ from the base')
    delta = make_delta(
        state_dict,
        selection,
        base_state_dict=base_state_dict,
        weights=label,
        source=describe_source(path, checkpoint, key),
        base_checkpoint=base_checkpoint)
    dataset_meta = (checkpoint.get('meta') or {}).get('dataset_meta')
    try:
        check_plain(dataset_meta, 'dataset_meta')
        delta['meta']['dataset_meta'] = dataset_meta
    except TypeError as error:
        message += f'\ndataset_meta not kept: {error}'
    return delta, state_dict, message
