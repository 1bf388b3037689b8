"""Optimizer-wrapper constructor for SPT: arms the masked wrapper at once."""
from collections import OrderedDict
from typing import Optional, Tuple

import torch.nn as nn
from mmengine.dist import all_gather_object
from mmengine.logging import MessageHub, print_log
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS

from ...models.backbones.spt_vit import SPTViT
from ...selection.eligibility import FROZEN, FULL, MASKED
from ...selection.record import build_record
from ...selection.record import SelectionResult
from .fisher_mask_constructor import FisherMaskOptimWrapperConstructor


def _spt_backbone(model: nn.Module) -> Tuple[str, SPTViT]:
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, SPTViT)]
    if len(found) != 1:
        raise TypeError(f'SPTOptimWrapperConstructor needs exactly one SPTViT '
                        f'in the model, found {len(found)}')
    name, backbone = found[0]
    return (f'{name}.' if name else ''), backbone


def spt_selection_record(model: nn.Module) -> dict:
    """The selection record of an SPT model for the masked wrapper.

    ``indices``: the unstructured entries (and full-vector slices) of every
    partially trained tensor; ``full``: every other ``requires_grad``
    tensor (structured modules, full vectors, [CLS] token, head).
    """
    prefix, backbone = _spt_backbone(model)
    params = dict(model.named_parameters())
    indices = {prefix + n: idx for n, idx in backbone.masked_indices.items()}
    layers = {}
    for name, idx in indices.items():
        shape = list(params[name].shape)
        numel = params[name].numel()
        layers[name] = dict(shape=shape, rows=shape[0],
                            cols=numel // shape[0], numel=numel, c=None,
                            selected=idx.numel(), density=idx.numel() / numel)
    result = SelectionResult(
        indices=indices, layers=layers,
        settings=dict(rule='spt', structured_type=backbone.structured_type,
                      sensitivity_file=backbone.sensitivity_file,
                      **backbone.spt_counts))
    full = [n for n, p in params.items()
            if p.requires_grad and n not in indices]
    return build_record(result, full,
                        {n: params[n].shape for n in indices})


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SPTOptimWrapperConstructor(FisherMaskOptimWrapperConstructor):
    """Masked optimizer wrapper for an ``SPTViT`` model, armed when built.

    ``SPTViT`` fixes the trainable structure at construction from its
    allocation file, so the selection is known before the optimizer exists:
    this constructor builds the parameter groups over the ``requires_grad``
    tensors (``paramwise_cfg`` semantics kept, no warning per frozen
    tensor) and immediately arms the masked wrapper with the unstructured
    entries -- no hook and no pass at ``before_train``.  Arming before the
    schedulers and ``auto_scale_lr`` see the groups keeps them intact; on
    resume the wrapper's state carries the same selection (checksums are
    compared).  Under DDP every rank reads the same file; the record
    checksums are compared across ranks.

    Example:
        >>> optim_wrapper = dict(
        ...     constructor='SPTOptimWrapperConstructor',
        ...     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
        ...     paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.,
        ...                        flat_decay_mult=0.))

    Args:
        optim_wrapper_cfg (dict): The ``optim_wrapper`` config (see
            ``FisherMaskOptimWrapperConstructor``; ``eligibility`` is not
            accepted: ``SPTViT`` decides what trains).
        paramwise_cfg (dict, optional): Passed to the base constructor.
    """

    def __init__(self, optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None):
        if optim_wrapper_cfg.get('eligibility'):
            raise ValueError(
                'optim_wrapper.eligibility is not used with '
                "constructor='SPTOptimWrapperConstructor': SPTViT fixes "
                'requires_grad from its allocation file; remove it')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def param_roles(self, model: nn.Module) -> 'OrderedDict[str, str]':
        prefix, backbone = _spt_backbone(model)
        masked = {prefix + n for n in backbone.masked_indices}
        return OrderedDict(
            (n, MASKED if n in masked else FULL if p.requires_grad else
             FROZEN) for n, p in model.named_parameters())

    def __call__(self, model: nn.Module):
        wrapper = super().__call__(model)
        ori_model = model.module if hasattr(model, 'module') else model
        record = spt_selection_record(ori_model)
        checksums = all_gather_object(record['checksum'])
        if len(set(checksums)) != 1:
            raise RuntimeError(f'ranks built different SPT selections '
                               f'(checksums {checksums})')
        wrapper.arm(record)
        trainable = wrapper.num_updated()
        total = sum(p.numel() for p in ori_model.parameters())
        counts = record['settings']
        print_log(
            f'SPT ({counts["structured_type"]}, '
            f'{counts["sensitivity_file"]}): backbone structured '
            f'{counts["structured"]:,} + vectors {counts["vectors"]:,} + '
            f'unstructured {counts["unstructured"]:,} + cls_token '
            f'{counts["cls_token"]:,} = {counts["total"]:,}; trainable with '
            f'the head {trainable:,} / {total:,} '
            f'({100 * trainable / total:.3f}%)', logger='current')
        MessageHub.get_current_instance().update_info('trainable_params',
                                                      trainable)
        return wrapper
