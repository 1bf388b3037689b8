r"""Which parameters are masked, fully trained or frozen (pure torch).

Defaults follow GPS (CVPR 2024) as adopted by TR-PTS (docs/methods/trpts.md
§3, §12): the weight of every ``Linear``/``Conv`` outside the head is
*masked* (a Fisher selection picks entries of it, one row per output
neuron or channel); their biases, layer-scale vectors and the whole head
are *full* (trained densely); norms, position embeddings and tables, and
the [CLS] token are *frozen*.  Tensors are classified by the module that
owns them and their rank, not by ViT names, so the same rule covers:

- MMPretrain's ViT: exactly the 49 matrices (qkv, proj, fc1, fc2 of each
  block and the patch embedding);
- Swin: window-attention qkv/proj, MLPs, patch-merging reductions and the
  patch embedding are masked; relative position bias tables are frozen
  (``train_rel_pos_bias``);
- ConvNeXt: stem, downsampling, depthwise (one row of k*k taps per channel)
  and pointwise convolutions are masked; the layer scale ``gamma`` is full
  (``train_layer_scale``); GRN (v2) counts as a norm.

A tensor that none of these rules (nor ``masked_keys`` / ``full_keys`` /
``frozen_keys``) classifies is an error naming it: nothing is frozen
silently.

Example config (``optim_wrapper.eligibility``)::

    eligibility = dict(
        train_norm=False, train_bias=True, train_cls_token=False,
        masked_keys=[], full_keys=[], frozen_keys=[r'^backbone\.layers\.0\.'])
"""
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Tuple

import torch.nn as nn

MASKED, FULL, FROZEN = 'masked', 'full', 'frozen'
_MASKABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Norms by type (MMPretrain's ``LayerNorm2d`` subclasses ``nn.LayerNorm``)
#: and, without importing MMPretrain here, by class name: ConvNeXt-V2's
#: Global Response Normalization.
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm,
          nn.modules.instancenorm._InstanceNorm)
_NORM_CLASS_NAMES = ('GRN', )
#: Layer-scale modules by class name (MMPretrain's and mmcv's
#: ``LayerScale``, parameter ``weight``; timm's, parameter ``gamma``) and
#: layer-scale vectors held by a block itself (ConvNeXt's ``gamma``).
_LAYER_SCALE_CLASS_NAMES = ('LayerScale', )
_LAYER_SCALE_PARAMS = ('gamma', 'gamma1', 'gamma2', 'gamma_1', 'gamma_2')
_TOKENS = ('cls_token', 'dist_token')
_UNUSED_TOKENS = ('mask_token', )  # masked-image-modelling only
_POS_EMBEDS = ('pos_embed', 'absolute_pos_embed')
_REL_POS_TABLES = ('relative_position_bias_table', )
_DEFAULTS = dict(
    train_bias=True, train_norm=False, train_cls_token=False,
    train_pos_embed=False, train_rel_pos_bias=False, train_layer_scale=True,
    head_prefix='head.', masked_keys=(), full_keys=(), frozen_keys=())
_MAX_LISTED = 10


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(re.search(p, name) for p in patterns)


def _switch(on: bool) -> str:
    return FULL if on else FROZEN


def _default_role(module: nn.Module, local: str, dim: int,
                  cfg: dict) -> Optional[str]:
    """The role of the default rule, or None if it cannot classify."""
    cls_name = type(module).__name__
    if isinstance(module, _MASKABLE) and local == 'weight':
        return MASKED
    if isinstance(module, _MASKABLE) and local == 'bias':
        return _switch(cfg['train_bias'])
    if isinstance(module, _NORMS) or cls_name in _NORM_CLASS_NAMES:
        return _switch(cfg['train_norm'])
    if dim == 1 and (cls_name in _LAYER_SCALE_CLASS_NAMES
                     or local in _LAYER_SCALE_PARAMS):
        return _switch(cfg['train_layer_scale'])
    if local in _TOKENS:
        return _switch(cfg['train_cls_token'])
    if local in _UNUSED_TOKENS:
        return FROZEN
    if local in _POS_EMBEDS:
        return _switch(cfg['train_pos_embed'])
    if local in _REL_POS_TABLES:
        return _switch(cfg['train_rel_pos_bias'])
    if dim == 1 and local.endswith('_bias'):  # q_bias / v_bias (BEiT-style)
        return _switch(cfg['train_bias'])
    return None


def assign_roles(model: nn.Module,
                 rules: Optional[dict] = None) -> 'OrderedDict[str, str]':
    """Give every parameter of ``model`` the role masked, full or frozen.

    Precedence: ``frozen_keys`` > ``full_keys`` > ``masked_keys`` (regular
    expressions searched in the parameter name) > ``head_prefix`` (full) >
    the default rule (docs/methods/trpts.md §3, §12):

    ==========================================  ===========================
    tensor (by owning module / attribute)       role
    ==========================================  ===========================
    ``weight`` of ``Linear``/``Conv{1,2,3}d``   masked (rows = dim 0)
    ``bias`` of those                           ``train_bias`` (True)
    norms (``LayerNorm``, ``LayerNorm2d``,      ``train_norm`` (False)
    ``GroupNorm``, BN, IN, ``GRN``)
    layer scale (``LayerScale``, 1-D            ``train_layer_scale``
    ``gamma``/``gamma1``/``gamma2``)            (True)
    ``cls_token``, ``dist_token``               ``train_cls_token`` (False)
    ``pos_embed``, ``absolute_pos_embed``       ``train_pos_embed`` (False)
    ``relative_position_bias_table``            ``train_rel_pos_bias``
                                                (False)
    1-D ``*_bias`` (``q_bias``, ``v_bias``)     ``train_bias``
    ``mask_token``                              frozen
    anything else                               error
    ==========================================  ===========================

    A parameter with ``requires_grad=False`` (e.g. ``frozen_stages``) is
    always frozen.

    Args:
        model (nn.Module): The (unwrapped) model.
        rules (dict, optional): Overrides of the defaults ``train_bias``
            (True), ``train_norm`` (False), ``train_cls_token`` (False),
            ``train_pos_embed`` (False), ``train_rel_pos_bias`` (False),
            ``train_layer_scale`` (True), ``head_prefix`` ('head.'),
            ``masked_keys``, ``full_keys``, ``frozen_keys`` (empty).

    Returns:
        OrderedDict: parameter name -> role, in ``named_parameters`` order.

    Raises:
        KeyError: On an unknown rule.
        ValueError: If a parameter cannot be classified (listing each with
            its module type and shape), a masked tensor has fewer than 2
            dims, or nothing is masked.
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
    unclassified: List[Tuple[str, str, tuple]] = []
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
        else:
            role = _default_role(module, local, param.dim(), cfg)
            if role is None:
                unclassified.append(
                    (name, type(module).__name__, tuple(param.shape)))
                continue
        if role == MASKED and param.dim() < 2:
            raise ValueError(
                f'{name} (shape {tuple(param.shape)}) matched as masked, but '
                'only weights with >= 2 dims can be masked per row; use '
                'full_keys or frozen_keys for vectors')
        roles[name] = role
    if unclassified:
        listed = '; '.join(f'{n} ({m}, shape {s})'
                           for n, m, s in unclassified[:_MAX_LISTED])
        more = len(unclassified) - _MAX_LISTED
        listed += f'; and {more} more' if more > 0 else ''
        raise ValueError(
            f'the eligibility rules cannot classify {len(unclassified)} '
            f'parameter(s): {listed}. Only Linear/Conv weights and biases, '
            'norms, layer scales, [CLS]/distillation tokens, position '
            'embeddings and relative position bias tables have a default '
            'role (docs/methods/trpts.md §12). Give these one with '
            'optim_wrapper.eligibility frozen_keys / full_keys / masked_keys '
            '(regular expressions on the parameter name)')
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
