"""Optimizer-wrapper constructor for Fisher-mask (masked) fine-tuning."""
import copy
import logging
from collections import OrderedDict
from contextlib import contextmanager
from typing import Optional

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS

from ...selection.eligibility import FROZEN, MASKED, assign_roles
from .masked_update_mixin import _rebuild_optimizer

_MASKED_TYPES = {
    'OptimWrapper': 'MaskedOptimWrapper',
    'AmpOptimWrapper': 'MaskedAmpOptimWrapper',
    'MaskedOptimWrapper': 'MaskedOptimWrapper',
    'MaskedAmpOptimWrapper': 'MaskedAmpOptimWrapper',
}

_FROZEN_SKIPPED = 'is skipped since its requires_grad=False'


class _SkipFrozenWarnings(logging.Filter):

    def filter(self, record: logging.LogRecord) -> bool:
        return _FROZEN_SKIPPED not in record.getMessage()


@contextmanager
def _quiet_frozen_tensors():
    """Silence mmengine's one WARNING per ``requires_grad=False`` tensor
    (issued whenever ``paramwise_cfg`` is set, docs/design/runner_order.md
    §4)."""
    logger = MMLogger.get_current_instance()
    quiet = _SkipFrozenWarnings()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FisherMaskOptimWrapperConstructor:
    """Build a masked optimizer wrapper for TR-PTS / GPS style selection.

    Parameter groups come from a base constructor (``paramwise_cfg`` --
    ``bias_decay_mult``, ``norm_decay_mult``, ``custom_keys``, ... -- and
    MMPretrain's layer-wise lr decay keep their semantics); tensors that the
    eligibility rules freeze are then removed, quietly (no warning per
    frozen tensor, and no ``requires_grad`` change: DDP's parameter set stays
    fixed).  The wrapper holds every candidate densely until
    ``FisherSelectionHook`` arms it with the selection before the first
    iteration; from then on only selected entries move.

    Example:
        >>> optim_wrapper = dict(
        ...     constructor='FisherMaskOptimWrapperConstructor',
        ...     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        ...     paramwise_cfg=dict(bias_decay_mult=0.),
        ...     eligibility=dict(train_norm=False))
        >>> custom_hooks = [dict(type='FisherSelectionHook',
        ...                      target_ratio=0.0034)]

    Args:
        optim_wrapper_cfg (dict): The ``optim_wrapper`` config.  Extra keys:
            ``eligibility`` (see
            :func:`mmtrpts.selection.eligibility.assign_roles`) and
            ``base_constructor`` (default
            ``'DefaultOptimWrapperConstructor'``; e.g.
            ``'LearningRateDecayOptimWrapperConstructor'``).  ``type``
            ``OptimWrapper``/``AmpOptimWrapper`` become their masked
            variants.
        paramwise_cfg (dict, optional): Passed to the base constructor.
    """

    def __init__(self, optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None):
        cfg = copy.deepcopy(dict(optim_wrapper_cfg))
        self.eligibility = dict(cfg.pop('eligibility', None) or {})
        base_type = cfg.pop('base_constructor',
                            'DefaultOptimWrapperConstructor')
        wrapper_type = cfg.get('type', 'OptimWrapper')
        if wrapper_type not in _MASKED_TYPES:
            raise ValueError(
                f'FisherMaskOptimWrapperConstructor supports optim_wrapper '
                f'type {sorted(_MASKED_TYPES)}, got {wrapper_type!r}')
        cfg['type'] = _MASKED_TYPES[wrapper_type]
        self.base = OPTIM_WRAPPER_CONSTRUCTORS.build(
            dict(type=base_type, optim_wrapper_cfg=cfg,
                 paramwise_cfg=paramwise_cfg))

    def param_roles(self, model: nn.Module) -> 'OrderedDict[str, str]':
        """Role (masked / full / frozen) of every parameter of the unwrapped
        model: :func:`~mmtrpts.selection.eligibility.assign_roles` with the
        ``eligibility`` rules."""
        return assign_roles(model, self.eligibility)

    def __call__(self, model: nn.Module):
        ori_model = model.module if hasattr(model, 'module') else model
        roles = self.param_roles(ori_model)
        names = {id(p): n for n, p in ori_model.named_parameters()}
        with _quiet_frozen_tensors():
            wrapper = self.base(model)
        groups = []
        for group in wrapper.optimizer.param_groups:
            params = [
                p for p in group['params'] if roles[names[id(p)]] != FROZEN
            ]
            if params:
                groups.append(dict(group, params=params))
        wrapper.optimizer = _rebuild_optimizer(wrapper.optimizer, groups)
        wrapper.roles = roles
        wrapper.bind_param_names(ori_model)
        sizes = {role: 0 for role in set(roles.values())}
        for name, param in ori_model.named_parameters():
            sizes[roles[name]] += param.numel()
        print_log(
            f'FisherMaskOptimWrapperConstructor: {sizes.get(MASKED, 0):,} '
            f'entries are masking candidates (entries are selected before '
            f'training), {sizes.get("full", 0):,} trained densely, '
            f'{sizes.get(FROZEN, 0):,} frozen', logger='current')
        return wrapper
