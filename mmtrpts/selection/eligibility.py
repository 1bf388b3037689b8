r"""Which parameters are masked, fully trained or frozen (pure torch).

Defaults follow GPS (CVPR 2024) as adopted by TR-PTS (docs/methods/trpts.md
§3): the weight of every ``Linear``/``Conv`` outside the head is *masked* (a
Fisher selection picks entries of it); their biases and the whole head are
*full* (trained densely); everything else -- norms, position embeddings, the
[CLS] token -- is *frozen*.  For MMPretrain's ViT that is exactly the 49
matrices (qkv, proj, fc1, fc2 of each block and the patch embedding); the
same rule works for conv backbones.

Example config (``optim_wrapper.eligibility``)::

    eligibility = dict(
        train_norm=False, train_bias=True, train_cls_token=False,
        masked_keys=[], full_keys=[], frozen_keys=[r'^backbone\.layers\.0\.'])
"""
import re
from collections import OrderedDict
from typing import Dict, Iterable, Optional

import torch.nn as nn

MASKED, FULL, FROZEN = 'masked', 'full', 'frozen'
_MASKABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm,
          nn.modules.instancenorm._InstanceNorm)
_DEFAULTS = dict(
    train_bias=True, train_norm=False, train_cls_token=False,
    train_pos_embed=False, head_prefix='head.', masked_keys=(),
    full_keys=(), frozen_keys=())


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(re.search(p, name) for p in patterns)


def assign_roles(model: nn.Module,
                 rules: Optional[dict] = None) -> 'OrderedDict[str, str]':
    """Give every parameter of ``model`` the role masked, full or frozen.

    Precedence: ``frozen_keys`` > ``full_keys`` > ``masked_keys`` (regular
    expressions searched in the parameter name) > the default rule.  A
    parameter with ``requires_grad=False`` (e.g. ``frozen_stages``) is
    always frozen.

    Args:
        model (nn.Module): The (unwrapped) model.
        rules (dict, optional): Overrides of the defaults ``train_bias``
            (True), ``train_norm`` (False), ``train_cls_token`` (False),
            ``train_pos_embed`` (False), ``head_prefix`` ('head.'),
            ``masked_keys``, ``full_keys``, ``frozen_keys`` (empty).

    Returns:
        OrderedDict: parameter name -> role, in ``named_parameters`` order.
    """
    rules = dict(rules or {})
    unknown = set(rules) - set(_DEFAULTS)
    if unknown:
        raise KeyError(f'unknown eligibility keys {sorted(unknown)}; '
                       f'expected some of {sorted(_DEFAULTS)}')
    cfg = dict(_DEFAULTS, **rules)
    owner = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full_name = f'{module_name}.{param_name}' if module_name \
                else param_name
            owner[full_name] = (module, param_name)
    roles = OrderedDict()
    for name, param in model.named_parameters():
        module, local = owner[name]
        if not param.requires_grad or _matches(name, cfg['frozen_keys']):
            role = FROZEN
        elif _matches(name, cfg['full_keys']):
            role = FULL
        elif _matches(name, cfg['masked_keys']):
            role = MASKED
        elif name.startswith(cfg['head_prefix']):
            role = FULL
        elif isinstance(module, _MASKABLE) and local == 'weight':
            role = MASKED
        elif isinstance(module, _MASKABLE) and local == 'bias':
            role = FULL if cfg['train_bias'] else FROZEN
        elif isinstance(module, _NORMS):
            role = FULL if cfg['train_norm'] else FROZEN
        elif local == 'cls_token':
            role = FULL if cfg['train_cls_token'] else FROZEN
        elif local == 'pos_embed':
            role = FULL if cfg['train_pos_embed'] else FROZEN
        else:
            role = FROZEN
        if role == MASKED and param.dim() < 2:
            raise ValueError(
                f'{name} (shape {tuple(param.shape)}) matched as masked, but '
                'only weights with >= 2 dims can be masked per row; use '
                'full_keys or frozen_keys for vectors')
        roles[name] = role
    if MASKED not in roles.values():
        raise ValueError('no parameter is eligible for masking: the model '
                         'has no Linear/Conv weight outside the head and no '
                         'masked_keys matched')
    return roles


def count_roles(model: nn.Module, roles: Dict[str, str]) -> Dict[str, int]:
    """Number of parameter entries per role."""
    counts = {MASKED: 0, FULL: 0, FROZEN: 0}
    for name, param in model.named_parameters():
        counts[roles[name]] += param.numel()
    return counts
