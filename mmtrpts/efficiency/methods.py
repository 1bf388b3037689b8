"""The methods of the efficiency report: a registry of name -> builder.

A builder takes the report's settings (a dict, see
:class:`~mmtrpts.efficiency.report.ReportSettings`) and returns a
:class:`Method`: the backbone of its classifier and how its optimizer
wrapper (and training form) is built.  A new row of the report is one more
registered builder::

    @register_method('adapter')
    def adapter(settings: dict) -> Method:
        return Method('Adapter', dict(type='AdapterViT'), trainable_wrapper)

The first registered method, ``'full'``, is the reference of every ratio;
``'frozen'`` (the frozen-weights bound) is the reference of the second set
of ratios.  Records a method needs (``Method.needs``) are computed once, in
the report's selection child process, from the same random batches:
``'trpts'`` (TR-PTS selection), ``'gps'`` (GPS's uniform-K rule on the same
Fisher scores) and ``'spt'`` (SPT's sensitivity allocation, a file that
``settings['spt_allocation']`` points to).
"""
from functools import partial
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from ..engine import apply_training_form
from .common import build_wrapper

#: Records the selection child can compute (see :attr:`Method.needs`).
RECORDS = ('trpts', 'gps', 'spt')
#: AdamW settings of every row (as :func:`~.common.build_wrapper`).
LR, WEIGHT_DECAY = 1e-3, 0.05


class Method(NamedTuple):
    """How one method is built for training and inference.

    Attributes:
        label (str): Row label of the table.
        backbone (dict): ``type`` and extra arguments of the backbone,
            merged into the common ViT arch/size (as
            :func:`~mmtrpts.efficiency.token_selection.build_classifier`
            takes them).  Methods with equal backbones (and ``wrap``) run
            the same inference network and share its FLOP count and
            throughput.
        build_wrapper (callable): ``(model, records, amp) -> optimizer
            wrapper``; ``records`` maps each name of ``needs`` to its
            selection record.  It may freeze parameters of ``model``, arm a
            masked wrapper and put the model into a training form (the
            wrapper then carries it as ``training_form``).
        needs (tuple): Records of :data:`RECORDS` the method needs.
        wrap (dict, optional): A backbone wrapper config (e.g.
            mmpretrain's ``LoRAModel``) that gets the backbone config as
            its ``module``.
    """
    label: str
    backbone: dict
    build_wrapper: Callable
    needs: Tuple[str, ...] = ()
    wrap: Optional[dict] = None


#: name -> builder ``(settings: dict) -> Method``, in table order.
METHODS: Dict[str, Callable[[dict], Method]] = {}


def register_method(name: str) -> Callable:
    """Decorator that adds a builder to :data:`METHODS` under ``name``."""

    def register(builder: Callable[[dict], Method]) -> Callable:
        if name in METHODS:
            raise KeyError(f'method {name!r} is already registered')
        METHODS[name] = builder
        return builder

    return register


# -- optimizer wrappers -------------------------------------------------------
def dense_wrapper(model: nn.Module, records: dict, amp: bool):
    """AdamW over every parameter (full fine-tuning)."""
    return build_wrapper(model, 'full', lr=LR, weight_decay=WEIGHT_DECAY,
                         amp=amp)


def head_wrapper(model: nn.Module, records: dict, amp: bool):
    """Freeze the backbone (``requires_grad=False``); AdamW over the head."""
    model.backbone.requires_grad_(False)
    return build_wrapper(model.head, 'full', lr=LR,
                         weight_decay=WEIGHT_DECAY, amp=amp)


def trainable_wrapper(model: nn.Module, records: dict, amp: bool):
    """AdamW over the parameters that require gradients (nothing else).

    For models whose backbone fixes its trainable set when built (LoRA,
    RLRR, Sparse-Tuning); the head trains as in every row.
    """
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
    return (AmpOptimWrapper if amp else OptimWrapper)(optimizer=optimizer)


def bias_wrapper(model: nn.Module, records: dict, amp: bool):
    """The frozen-weights bound: backbone biases and the head train.

    Every backbone parameter whose name does not end in ``bias`` (weight
    matrices, patch conv, norm scales, [CLS] token, positions) gets
    ``requires_grad=False``; the biases inside every block keep the
    backward running through all blocks (input gradients), but no weight
    gradient is computed.
    """
    for name, param in model.backbone.named_parameters():
        param.requires_grad_(name.endswith('bias'))
    return trainable_wrapper(model, records, amp)


def masked_wrapper(model: nn.Module, records: dict, amp: bool,
                   rule: str = 'trpts', sparse_values: bool = False):
    """The masked AdamW wrapper armed with the ``rule`` record.

    Args:
        rule (str): Key of the record in ``records`` (``'trpts'``,
            ``'gps'``).
        sparse_values (bool): Then put the model into its training form
            (:func:`~mmtrpts.engine.apply_training_form`: selected Linear /
            patch-conv weights train through sparse values, tensors that
            train nothing stop requiring gradients), kept on the wrapper as
            ``training_form``.  False: the masked path (dense weight
            gradients, entries gathered).
    """
    selection = (records or {}).get(rule)
    if selection is None:
        raise ValueError(f'the masked wrapper needs the {rule!r} selection '
                         'record')
    wrapper = build_wrapper(model, 'trpts', lr=LR, weight_decay=WEIGHT_DECAY,
                            amp=amp)
    wrapper.arm(selection)
    if sparse_values:
        wrapper.training_form = apply_training_form(model, wrapper)
    return wrapper


def spt_wrapper(model: nn.Module, records: dict, amp: bool):
    """``SPTOptimWrapperConstructor``: the masked wrapper armed at once with
    the unstructured entries of the ``SPTViT`` (its own training path)."""
    from mmengine.optim import build_optim_wrapper
    cfg = dict(type='AmpOptimWrapper' if amp else 'OptimWrapper',
               optimizer=dict(type='AdamW', lr=LR,
                              weight_decay=WEIGHT_DECAY),
               constructor='SPTOptimWrapperConstructor')
    return build_optim_wrapper(model, cfg)


# -- the methods --------------------------------------------------------------
_DENSE_VIT = dict(type='VisionTransformer')


def _tokens(settings: dict) -> dict:
    return dict(keep_rate=settings['keep_rate'],
                keep_layers=tuple(settings['keep_layers']))


@register_method('full')
def full_finetuning(settings: dict) -> Method:
    """Every parameter trained (the reference)."""
    return Method('full fine-tuning', _DENSE_VIT, dense_wrapper)


@register_method('linear')
def linear_probing(settings: dict) -> Method:
    """Frozen backbone, trained head."""
    return Method('linear probing', _DENSE_VIT, head_wrapper)


@register_method('frozen')
def frozen_weights_bound(settings: dict) -> Method:
    """Every weight frozen; backbone biases and the head trained (BitFit):
    the backward through every block without a weight gradient, the bound
    of any method that trains weight entries."""
    return Method('frozen-weights bound', _DENSE_VIT, bias_wrapper)


@register_method('lora')
def lora(settings: dict) -> Method:
    """mmpretrain's ``LoRAModel``: rank-r LoRA on every ``qkv`` (alpha = r,
    no dropout); the rest of the backbone frozen, the head trained."""
    rank = settings['lora_rank']
    wrap = dict(type='LoRAModel', rank=rank, alpha=rank, drop_rate=0.,
                targets=[dict(type='qkv')])
    return Method(f'LoRA (mmpretrain, r={rank} qkv)', _DENSE_VIT,
                  trainable_wrapper, wrap=wrap)


@register_method('trpts_masked')
def trpts_masked(settings: dict) -> Method:
    """TR-PTS selection on the masked path (dense ViT, masked AdamW: dense
    weight gradients, selected entries gathered)."""
    return Method('TR-PTS masked', _DENSE_VIT, masked_wrapper,
                  needs=('trpts', ))


@register_method('trpts')
def trpts_sparse_values(settings: dict) -> Method:
    """TR-PTS selection in its training form (sparse-value layers)."""
    return Method('TR-PTS sparse-value', _DENSE_VIT,
                  partial(masked_wrapper, sparse_values=True),
                  needs=('trpts', ))


@register_method('trpts_tokens')
def trpts_sparse_values_and_tokens(settings: dict) -> Method:
    """TR-PTS sparse-value form plus token keep/fuse blocks.

    The blocks are ``settings['keep_layers']``, fixed: TR-PTS puts them in
    the parameter-sparsest blocks of the task's selection, which depend on
    the data.
    """
    backbone = dict(type='TokenKeepFuseViT', **_tokens(settings))
    return Method('TR-PTS sparse-value + tokens', backbone,
                  partial(masked_wrapper, sparse_values=True),
                  needs=('trpts', ))


@register_method('gps')
def gps(settings: dict) -> Method:
    """GPS's rule (uniform K per output neuron) on the TR-PTS Fisher scores,
    in the sparse-value form."""
    return Method(f'GPS rule (K={settings["gps_k"]}) sparse-value',
                  _DENSE_VIT,
                  partial(masked_wrapper, rule='gps', sparse_values=True),
                  needs=('gps', ))


@register_method('spt')
def spt_lora(settings: dict) -> Method:
    """SPT-LoRA: ``SPTViT`` with the allocation of the selection child and
    ``SPTOptimWrapperConstructor`` (module dropout / drop-path 0, as the
    drop-path of every row)."""
    backbone = dict(type='SPTViT', structured_type='lora',
                    rank=settings['spt_rank'], module_dropout=0.,
                    module_drop_path=0.,
                    sensitivity_file=settings.get('spt_allocation'))
    return Method(f'SPT-LoRA (r={settings["spt_rank"]})', backbone,
                  spt_wrapper, needs=('spt', ))


@register_method('rlrr')
def rlrr(settings: dict) -> Method:
    """RLRR + SSF on the frozen ViT (``RLRRViT``), head trained."""
    backbone = dict(type='RLRRViT', rlrr_init='identity', branch_dropout=0.)
    return Method('RLRR', backbone, trainable_wrapper)


def sparse_tuning_adapter(arch) -> dict:
    """Dense Adapter sizes: ViT-B's 64 -> 32 at 768 dims, scaled with the
    width (hidden = max(16, dims // 12), inner = hidden // 2)."""
    from mmpretrain.models import VisionTransformer
    dims = (arch['embed_dims'] if isinstance(arch, dict) else
            VisionTransformer.arch_zoo[arch]['embed_dims'])
    hidden = max(16, dims // 12)
    return dict(hidden_dims=hidden, inner_dims=hidden // 2)


@register_method('sparse_tuning')
def sparse_tuning(settings: dict) -> Method:
    """Sparse-Tuning (``SparseTuningViT``): Dense Adapters on the frozen
    ViT and its own token keep/fuse (keep rate 0.7, ceil, unnormalised
    fusion) at ``keep_layers``; LinearClsHead as every row."""
    backbone = dict(type='SparseTuningViT', keep_rate=0.7,
                    keep_layers=tuple(settings['keep_layers']),
                    keep_round='ceil', fuse='sum', dense='stage_sum',
                    adapter_cfg=sparse_tuning_adapter(settings['arch']))
    return Method('Sparse-Tuning', backbone, trainable_wrapper)
