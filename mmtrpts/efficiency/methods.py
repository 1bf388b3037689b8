"""The methods of the efficiency report: a registry of name -> builder.

A builder takes the report's settings (a dict, see
:class:`~mmtrpts.efficiency.report.ReportSettings`) and returns a
:class:`Method`: the backbone of its classifier and how its optimizer
wrapper is built.  A new row of the report (SPT, Sparse-Tuning, RLRR, ...)
is one more registered builder::

    @register_method('spt')
    def spt(settings: dict) -> Method:
        return Method('SPT', dict(type='SPTViT', rank=8), spt_wrapper)

The first registered method, ``'full'``, is the reference of every ratio.
"""
from typing import Callable, Dict, NamedTuple, Optional

import torch.nn as nn

from .common import build_wrapper


class Method(NamedTuple):
    """How one method is built for training and inference.

    Attributes:
        label (str): Row label of the table.
        backbone (dict): ``type`` and extra arguments of the backbone,
            merged into the common ViT arch/size (as
            :func:`~mmtrpts.efficiency.token_selection.build_classifier`
            takes them).  Methods with equal backbones run the same
            inference network and share its FLOP count and throughput.
        build_wrapper (callable): ``(model, selection, amp) -> optimizer
            wrapper``; it may freeze parameters of ``model`` and arms a
            masked wrapper with ``selection``.
        needs_selection (bool): ``build_wrapper`` needs the TR-PTS
            selection record.
    """
    label: str
    backbone: dict
    build_wrapper: Callable
    needs_selection: bool = False


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
def dense_wrapper(model: nn.Module, selection: Optional[dict], amp: bool):
    """AdamW over every parameter (full fine-tuning)."""
    return build_wrapper(model, 'full', amp=amp)


def head_wrapper(model: nn.Module, selection: Optional[dict], amp: bool):
    """Freeze the backbone (``requires_grad=False``); AdamW over the head."""
    model.backbone.requires_grad_(False)
    return build_wrapper(model.head, 'full', amp=amp)


def masked_wrapper(model: nn.Module, selection: Optional[dict], amp: bool):
    """The masked AdamW wrapper of TR-PTS, armed with ``selection``."""
    if selection is None:
        raise ValueError('the masked wrapper needs a selection record')
    wrapper = build_wrapper(model, 'trpts', amp=amp)
    wrapper.arm(selection)
    return wrapper


# -- the methods implemented so far ------------------------------------------
_DENSE_VIT = dict(type='VisionTransformer')


@register_method('full')
def full_finetuning(settings: dict) -> Method:
    """Every parameter trained (the reference)."""
    return Method('full fine-tuning', _DENSE_VIT, dense_wrapper)


@register_method('linear')
def linear_probing(settings: dict) -> Method:
    """Frozen backbone, trained head."""
    return Method('linear probing', _DENSE_VIT, head_wrapper)


@register_method('trpts_params')
def trpts_parameters(settings: dict) -> Method:
    """TR-PTS parameter selection only (dense ViT, masked AdamW)."""
    return Method('TR-PTS params', _DENSE_VIT, masked_wrapper,
                  needs_selection=True)


@register_method('trpts_tokens')
def trpts_parameters_and_tokens(settings: dict) -> Method:
    """TR-PTS parameter selection plus token keep/fuse blocks.

    The blocks are ``settings['keep_layers']``, fixed: TR-PTS puts them in
    the parameter-sparsest blocks of the task's selection, which depend on
    the data.
    """
    backbone = dict(type='TokenKeepFuseViT',
                    keep_rate=settings['keep_rate'],
                    keep_layers=tuple(settings['keep_layers']))
    return Method('TR-PTS params+tokens', backbone, masked_wrapper,
                  needs_selection=True)
