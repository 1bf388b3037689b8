"""Initialisation of the branches a PEFT backbone adds (adapters, LoRA).

Two modes, selected per backbone with ``branch_init``:

``'zero'``
    The initialisation the reference modules *write* in their constructors:
    Kaiming-uniform (a = sqrt(5)) down-projections and zero up-projections,
    so every branch outputs exactly 0 at step 0.
``'reference'``
    The state the reference code *trains from*.  Both SPT (``ziplab/SPT``)
    and Sparse-Tuning (``liuting20/Sparse-Tuning``) build their branches
    inside a timm ``VisionTransformer`` whose constructor then calls
    ``self.apply(_init_vit_weights)``, which overwrites **every**
    ``nn.Linear`` -- the new branches included -- with
    ``trunc_normal_(weight, std=.02)`` and a zero bias; the pre-trained npz
    is loaded afterwards and restores the backbone's own Linears, so
    effectively only the branches keep trunc-normal(0.02) / zero bias, and
    up-projections are *not* zero at step 0 (docs/methods/spt.md §2.1,
    docs/methods/sparse_tuning.md §2e).

timm's ``trunc_normal_(tensor, mean=0., std=1., a=-2., b=2.)`` takes
``a``/``b`` as **absolute** bounds, so at std 0.02 the cut is at +-2 =
+-100 std: in effect an untruncated normal.  ``torch.nn.init.trunc_normal_``
has the same signature and bounds, but recent torch versions draw with a
different algorithm (rejection sampling); :func:`timm_trunc_normal_` is
timm 0.5.4's inverse-CDF sampler (the version both reference codes pin), so
a seeded draw equals the reference's.
"""
import math
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

#: Values of the backbones' ``branch_init`` argument.
BRANCH_INITS = ('zero', 'reference')
#: timm's ``_init_vit_weights``: ``trunc_normal_(m.weight, std=.02)``.
REFERENCE_STD = 0.02
#: timm's (and torch's) ``trunc_normal_`` defaults: absolute bounds.
REFERENCE_BOUNDS = (-2., 2.)


def check_branch_init(branch_init: str) -> str:
    """Return ``branch_init`` if it is one of :data:`BRANCH_INITS`.

    Raises:
        ValueError: For any other value.
    """
    if branch_init not in BRANCH_INITS:
        raise ValueError(f'branch_init must be one of {BRANCH_INITS}, got '
                         f'{branch_init!r}')
    return branch_init


def timm_trunc_normal_(tensor: Tensor,
                       mean: float = 0.,
                       std: float = 1.,
                       a: float = -2.,
                       b: float = 2.) -> Tensor:
    """timm 0.5.4's ``trunc_normal_``, in place (no gradient).

    Inverse-CDF sampling of ``N(mean, std^2)`` truncated to the
    **absolute** interval ``[a, b]``: ``uniform(2 cdf(a) - 1, 2 cdf(b) -
    1)``, ``erfinv``, scale, shift, clamp.

    Args:
        tensor (Tensor): Filled in place.
        mean (float): Mean. Defaults to 0.
        std (float): Standard deviation. Defaults to 1.
        a (float): Lower bound (absolute, not in std units). Defaults to -2.
        b (float): Upper bound (absolute). Defaults to 2.

    Returns:
        Tensor: ``tensor``.
    """

    def norm_cdf(x: float) -> float:
        return (1. + math.erf(x / math.sqrt(2.))) / 2.

    with torch.no_grad():
        low, high = norm_cdf((a - mean) / std), norm_cdf((b - mean) / std)
        tensor.uniform_(2 * low - 1, 2 * high - 1)
        tensor.erfinv_()
        tensor.mul_(std * math.sqrt(2.))
        tensor.add_(mean)
        tensor.clamp_(min=a, max=b)
    return tensor


def reference_init_(weight: Tensor, bias: Optional[Tensor] = None) -> None:
    """timm's ``_init_vit_weights`` for one Linear, in place.

    ``weight`` ~ ``trunc_normal_(std=0.02, a=-2., b=2.)`` (absolute bounds,
    see the module doc), ``bias`` zero.

    Args:
        weight (Tensor): The Linear's weight (any shape).
        bias (Tensor, optional): Its bias, if it has one.
    """
    low, high = REFERENCE_BOUNDS
    with torch.no_grad():
        timm_trunc_normal_(weight, mean=0., std=REFERENCE_STD, a=low, b=high)
        if bias is not None:
            nn.init.zeros_(bias)


def reference_init_linears_(module: nn.Module) -> int:
    """Apply :func:`reference_init_` to every ``nn.Linear`` in ``module``
    (as the reference's ``self.apply(_init_vit_weights)`` does).

    Args:
        module (nn.Module): A branch (or a container of branches); never a
            module holding pre-trained Linears.

    Returns:
        int: How many Linears were initialised.
    """
    count = 0
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            reference_init_(layer.weight, layer.bias)
            count += 1
    return count
