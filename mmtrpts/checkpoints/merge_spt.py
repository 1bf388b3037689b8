"""Fold SPT-LoRA into plain weights (docs/methods/spt.md §2, "can be merged
into W").

A trained ``SPTViT`` (LoRA variant) differs from MMPretrain's
``VisionTransformer`` only by its LoRA branches -- the unstructured entries
and full vectors were trained in place -- so ``W[rows] += B @ A`` per branch
gives a state dict that loads strictly into ``VisionTransformer`` and
computes the same function at zero inference overhead.  The Adapter variant
has a GELU between its projections and cannot be merged.
"""
import re
from collections import OrderedDict
from typing import Mapping

from torch import Tensor

from ..selection.spt_allocation import slice_rows
from ..models.peft.spt_modules import BRANCH_ATTRS, CHECKSUM_BUFFER

_LORA_DOWN = re.compile(
    rf'^(?P<linear>.+)\.{BRANCH_ATTRS["lora"]}\.(?P<label>\w+)\.down$')


def merge_spt_lora(state_dict: Mapping[str, Tensor]
                   ) -> 'OrderedDict[str, Tensor]':
    """A plain ``VisionTransformer`` state dict from an SPT-LoRA one.

    Args:
        state_dict (Mapping[str, Tensor]): Of an ``SPTViT`` (keys relative
            to the backbone) or of a model holding one (``backbone.`` ...).

    Returns:
        OrderedDict: The same keys minus the SPT ones, each LoRA folded into
        its weight (computed in float32, stored in the weight's dtype).

    Raises:
        ValueError: For an SPT-Adapter state dict, a state dict without SPT
            keys, or a LoRA without its pair / base weight.
    """
    adapter = next((k for k in state_dict
                    if f'.{BRANCH_ATTRS["adapter"]}.' in k), None)
    if adapter is not None:
        raise ValueError(
            f'{adapter}: SPT-Adapter weights cannot be merged -- the GELU '
            'between its projections makes it non-linear '
            '(docs/methods/spt.md §2); '
            'evaluate it with its SPTViT config instead')
    lora_tag = f'.{BRANCH_ATTRS["lora"]}.'
    is_spt = [k for k in state_dict
              if lora_tag in k or k.split('.')[-1] == CHECKSUM_BUFFER]
    if not is_spt:
        raise ValueError('not an SPT state dict: no LoRA branch and no '
                         f'{CHECKSUM_BUFFER!r} buffer found')
    merged = OrderedDict((k, v) for k, v in state_dict.items()
                         if k not in is_spt)
    for key, down in state_dict.items():
        match = _LORA_DOWN.match(key)
        if match is None:
            continue
        up_key = key[:-len('down')] + 'up'
        weight_key = f'{match["linear"]}.weight'
        for needed in (up_key, weight_key):
            if needed not in state_dict:
                raise ValueError(f'{key}: {needed!r} is missing from the '
                                 'state dict')
        weight = merged[weight_key] = merged[weight_key].clone()
        start, stop = slice_rows(match['label'], weight.shape[0])
        delta = state_dict[up_key].float() @ down.float()
        weight[start:stop] += delta.to(weight.dtype)
    return merged
