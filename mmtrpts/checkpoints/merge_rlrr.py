"""Fold RLRR into a plain MMPretrain ``VisionTransformer`` state dict.

RLRR (CVPR 2024) merges into the frozen tensors (docs/methods/rlrr.md §3), so
a trained :class:`~mmtrpts.models.backbones.RLRRViT` becomes the pretrained
architecture with zero inference cost.  The keys of ``RLRRViT`` (under any
prefix, e.g. ``backbone.``) are folded as:

=====================================  ======================================
keys                                   folded into
=====================================  ======================================
``X.scale_left/scale_right/shift``     ``X.weight * (1 + s_l s_r^T)``,
                                       ``X.bias + f`` (RLRR Linear)
``X.ssf.scale/shift``                  ``X.weight * s``, ``X.bias * s + t``
                                       (LayerNorm + SSF)
``patch_embed.norm.scale/shift``       ``patch_embed.projection``: output
                                       channel ``c`` times ``s[c]``,
                                       ``bias * s + t`` (patch SSF)
=====================================  ======================================

Every other key (head, ``pos_embed``, ...) is kept as it is.
"""
from collections import OrderedDict
from typing import Mapping

from torch import Tensor

from ..models.peft.rlrr import fold_ssf, rlrr_weight

__all__ = ['merge_rlrr_state_dict']

# The SSF key prefixes (suffixes of them) -> the layer each SSF follows.
_SSF_TARGETS = (('.ssf.', '.'), ('patch_embed.norm.',
                                 'patch_embed.projection.'))
# Nothing with these endings may be left in a merged ViT state dict.
_RLRR_ENDINGS = ('.scale_left', '.scale_right', '.shift', '.scale')


def _ssf_target(prefix: str) -> str:
    """The prefix of the layer that the SSF at ``prefix`` follows, or ''."""
    for ending, target in _SSF_TARGETS:
        if prefix.endswith(ending):
            return prefix[:-len(ending)] + target
    return ''


def _take(state: dict, key: str, owner: str, pop: bool = True) -> Tensor:
    """``state[key]`` (removed when ``pop``), or an error naming ``owner``."""
    if key not in state:
        raise KeyError(f'{owner} needs {key!r}, which the state dict lacks')
    return state.pop(key) if pop else state[key]


def merge_rlrr_state_dict(
        state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Fold every RLRR Linear and SSF of an ``RLRRViT`` state dict.

    Args:
        state_dict (Mapping[str, Tensor]): An ``RLRRViT`` (or model) state
            dict.

    Returns:
        OrderedDict: A new state dict with the keys of the same model built
        with ``VisionTransformer``; it loads with ``strict=True``.

    Raises:
        KeyError: A folded tensor's partner is missing.
        ValueError: RLRR/SSF keys that no rule folds are left.
    """
    merged = OrderedDict(state_dict)
    for key in state_dict:
        if key.endswith('.scale_left'):
            prefix = key[:-len('scale_left')]
            owner = f'RLRR Linear {prefix[:-1]!r}'
            weight, bias = prefix + 'weight', prefix + 'bias'
            merged[weight] = rlrr_weight(
                _take(merged, weight, owner, pop=False), merged.pop(key),
                _take(merged, prefix + 'scale_right', owner))
            merged[bias] = _take(merged, bias, owner, pop=False) + \
                _take(merged, prefix + 'shift', owner)
        elif key.endswith('.scale') and _ssf_target(key[:-len('scale')]):
            prefix = key[:-len('scale')]
            target = _ssf_target(prefix)
            owner = f'SSF {prefix[:-1]!r}'
            weight, bias = target + 'weight', target + 'bias'
            merged[weight], merged[bias] = fold_ssf(
                _take(merged, weight, owner, pop=False),
                _take(merged, bias, owner, pop=False), merged.pop(key),
                _take(merged, prefix + 'shift', owner))
    left = [key for key in merged if key.endswith(_RLRR_ENDINGS)]
    if left:
        raise ValueError(f'RLRR/SSF keys left after merging: {left}; '
                         'expected scale_left/scale_right/shift beside '
                         'each RLRR weight and scale/shift in *.ssf. or '
                         'patch_embed.norm.')
    return merged
