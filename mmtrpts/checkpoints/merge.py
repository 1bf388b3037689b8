"""Fold a run's trained parameters into a plain ``VisionTransformer`` file.

One operation for every method whose training result can be written as an
ordinary MMPretrain checkpoint with zero inference overhead:

- ``'delta'``: a sparse delta of a selection run (TR-PTS, GPS) applied to
  its pretrained base (:func:`~.delta.apply_delta`);
- ``'rlrr'``: RLRR's rescaling and SSF folded into the frozen weights
  (:func:`~.merge_rlrr.merge_rlrr_state_dict`, docs/methods/rlrr.md §3);
- ``'spt'``: SPT-LoRA branches folded into their weights
  (:func:`~.merge_spt.merge_spt_lora`; SPT-Adapter is refused).

The output is ``{'meta': ..., 'state_dict': ...}`` with the keys of the
same model built with ``type='VisionTransformer'``; it loads strictly
without mmtrpts.  ``tools/model_converters/merge.py`` is its command line.
"""
from typing import Mapping, Optional

from torch import Tensor

from .delta import apply_delta, is_delta, merged_meta
from .merge_rlrr import merge_rlrr_state_dict
from .merge_spt import merge_spt_lora

#: Methods with a merge and the name recorded in ``meta.merged_from``.
METHODS = dict(delta='delta', rlrr='RLRR', spt='SPT-LoRA')


def _dataset_meta(checkpoint: Mapping) -> dict:
    """``meta.dataset_meta`` (class names for MMPretrain's inferencers)."""
    dataset_meta = (checkpoint.get('meta') or {}).get('dataset_meta')
    return {} if dataset_meta is None else dict(dataset_meta=dataset_meta)


def merge_checkpoint(method: str,
                     checkpoint: Mapping,
                     source: str,
                     base: Optional[Mapping] = None,
                     base_source: Optional[str] = None,
                     force: bool = False) -> dict:
    """Merge one trained checkpoint into a plain one.

    Args:
        method (str): ``'delta'``, ``'rlrr'`` or ``'spt'``.
        checkpoint (Mapping): The trained checkpoint (a delta for
            ``'delta'``), as read from ``source``.
        source (str): Its path, recorded in the output's meta.
        base (Mapping, optional): The pretrained base checkpoint; required
            for ``'delta'``.
        base_source (str, optional): The base's path.
        force (bool): ``'delta'`` only: apply the delta to a base whose
            content differs from the one it was made on.

    Returns:
        dict: ``dict(meta=..., state_dict=...)``; ``meta.merged_from``
        names the method, the source and what was folded.

    Raises:
        ValueError: If the checkpoint holds nothing to merge by ``method``
            (naming ``source``), or the method is unknown.
    """
    if method not in METHODS:
        raise ValueError(f'unknown merge method {method!r}; expected one of '
                         f'{sorted(METHODS)}')
    if method == 'delta':
        return _merge_delta(checkpoint, source, base, base_source, force)
    state: Mapping[str, Tensor] = checkpoint.get('state_dict', checkpoint)
    try:
        merged = (
            merge_rlrr_state_dict(state)
            if method == 'rlrr' else merge_spt_lora(state))
    except (KeyError, ValueError) as error:
        raise ValueError(f'{source}: {error}') from None
    folded = len(state) - len(merged)
    if folded <= 0:
        raise ValueError(f'{source} holds no {METHODS[method]} parameters')
    merged_from = dict(
        method=METHODS[method], checkpoint=source, folded_tensors=folded)
    if method == 'spt':
        merged_from['lora_branches'] = sum(
            k.endswith('.down') for k in state if k not in merged)
    meta = dict(merged_from=merged_from, **_dataset_meta(checkpoint))
    return dict(meta=meta, state_dict=merged)


def _merge_delta(delta: Mapping, source: str, base: Optional[Mapping],
                 base_source: Optional[str], force: bool) -> dict:
    if not is_delta(delta):
        raise ValueError(f'{source} is not a delta checkpoint')
    if base is None:
        raise ValueError(f'merging the delta {source} needs its base '
                         'checkpoint')
    if is_delta(base):
        raise ValueError(f'{base_source} is itself a delta; merge it first')
    try:
        merged = apply_delta(base.get('state_dict', base), delta, force=force)
    except ValueError as error:
        raise ValueError(f'{source} (base {base_source}): {error}') from None
    return dict(
        meta=merged_meta(delta['meta'], source, base_source),
        state_dict=merged)
