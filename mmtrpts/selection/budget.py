"""Parameter budgets: what a trainable fraction means in entries.

TR-PTS and GPS report the trainable share of the *backbone* (TR-PTS:
0.34% on VTAB-1k, 0.60% on FGVC for ViT-B/16; docs/methods/trpts.md §4,
budget arithmetic).  A budget counts every trainable parameter: the
selected entries of the masked weights plus the tensors trained densely
(biases, head).  :func:`parameter_budget` fixes the denominator and the
dense part; :func:`budget_to_entries` turns a ratio into the number of
masked entries a rule must select.

This module deliberately imports neither mmengine nor mmpretrain.
"""
import math
from typing import Iterable, Mapping, Optional

from torch import Tensor

#: What a budget's ratio is relative to: the backbone's parameters (the
#: papers' convention) or every parameter of the model (head included).
DENOMINATORS = ('backbone', 'model')


def parameter_budget(named_params: Mapping[str, Tensor], full: Iterable[str],
                     target_ratio: Optional[float] = None,
                     denominator: str = 'backbone') -> dict:
    """The budget of a model: denominator and densely trained count.

    Args:
        named_params (Mapping[str, Tensor]): The model's
            ``named_parameters()``; backbone names start with
            ``'backbone.'``.
        full (Iterable[str]): Names of the tensors trained densely.
        target_ratio (float, optional): The trainable fraction wanted.
        denominator (str): ``'backbone'`` (default) or ``'model'``.

    Returns:
        dict: ``target_ratio``, ``denominator`` (parameter count),
        ``denominator_kind`` and ``full`` (densely trained count).
    """
    if denominator not in DENOMINATORS:
        raise ValueError(f'denominator must be one of {DENOMINATORS}, got '
                         f'{denominator!r}')
    if denominator == 'backbone':
        count = sum(p.numel() for n, p in named_params.items()
                    if n.startswith('backbone.'))
    else:
        count = sum(p.numel() for p in named_params.values())
    return dict(target_ratio=target_ratio, denominator=count,
                denominator_kind=denominator,
                full=sum(named_params[n].numel() for n in full))


def budget_to_entries(target_ratio: float, denominator: int,
                      fixed_trainable: int) -> int:
    """Masked-weight entries needed for a parameter-fraction budget.

    ``round(target_ratio * denominator - fixed_trainable)`` (half up),
    e.g. TR-PTS's 0.34% of the 85,798,656 backbone parameters minus the
    always-trainable biases and head (docs/methods/trpts.md §4, budget
    arithmetic).

    Args:
        target_ratio (float): Trainable fraction wanted, e.g. ``0.0034``.
        denominator (int): Parameter count the ratio refers to.
        fixed_trainable (int): Trainable parameters outside the masked
            weights (biases, head, ...).

    Returns:
        int: Number of masked-weight entries, > 0.

    Raises:
        ValueError: If the result is <= 0 or an argument is invalid.
    """
    if not target_ratio > 0 or not denominator > 0 or fixed_trainable < 0:
        raise ValueError(
            f'need target_ratio > 0, denominator > 0, fixed_trainable >= 0; '
            f'got {target_ratio!r}, {denominator!r}, {fixed_trainable!r}')
    raw = target_ratio * denominator - fixed_trainable
    entries = math.floor(raw + 0.5)
    if entries <= 0:
        raise ValueError(
            f'budget leaves no masked entries: {target_ratio} * '
            f'{denominator} = {target_ratio * denominator:.1f} trainable '
            f'parameters, but {fixed_trainable} are already trainable '
            f'(biases/head)')
    return entries

