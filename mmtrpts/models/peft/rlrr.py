"""RLRR: residual-based low-rank rescaling of frozen Linears, plus SSF.

Pure PyTorch modules and merge maths of *Low-Rank Rescaled Vision
Transformer Fine-Tuning: A Residual Design Approach* (Dong et al., CVPR
2024; docs/methods/rlrr.md).  An adapted Linear keeps its frozen ``W`` (out x
in) and ``b`` and trains three vectors::

    W' = W + diag(s_left) W diag(s_right) = W * (1 + s_left s_right^T)
    b' = b + f

SSF (Lian et al., NeurIPS 2022) scales and shifts features per channel,
``y = x * s + t``.  Both fold into the frozen tensors (docs/methods/rlrr.md
§3), so a merged model is the plain pretrained architecture: zero inference
cost.

Initialisations (docs/methods/rlrr.md §2):

- ``'reference'`` (default, the official code): ``s_right`` Kaiming-uniform
  with fan_in = in, ``U(+-sqrt(6 / in))``; ``s_left`` Kaiming-uniform with
  fan_in = 1, ``U(+-sqrt(6))``; ``f = 0``; SSF ``s ~ N(1, 0.02)``,
  ``t ~ N(0, 0.02)``.  The model at step 0 is *not* the pretrained one.
- ``'identity'``: ``s_left = 0`` (``s_right`` as above, so ``s_left``
  receives gradients), ``f = 0``, SSF ``s = 1``, ``t = 0``: the model at
  step 0 equals the pretrained one exactly.
"""
import math
from typing import Iterator, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'RLRR_INITS', 'RLRRLinear', 'SSF', 'SSFLayerNorm', 'check_init',
    'fold_ssf', 'rlrr_parameters', 'rlrr_weight'
]

#: The initialisations of RLRR and SSF parameters.
RLRR_INITS = ('reference', 'identity')
# SSF's reference initialisation: N(1, std) scales, N(0, std) shifts.
_SSF_INIT_STD = 0.02


def check_init(init: str, key: str = 'init') -> str:
    """Return ``init`` if it is one of :data:`RLRR_INITS`, else raise a
    ``ValueError`` naming the argument ``key``."""
    if init not in RLRR_INITS:
        raise ValueError(f'{key} must be one of {RLRR_INITS}, got {init!r}')
    return init


def rlrr_weight(weight: Tensor, scale_left: Tensor,
                scale_right: Tensor) -> Tensor:
    """The rescaled weight ``W * (1 + s_left s_right^T)``.

    Args:
        weight (Tensor): ``W``, shape (out, in).
        scale_left (Tensor): ``s_left``, shape (out, ).
        scale_right (Tensor): ``s_right`` per row slice, shape
            (groups, in): the rows are cut into ``groups`` equal slices and
            slice ``g`` is rescaled with ``scale_right[g]`` (a fused qkv
            Linear has one per q/k/v, docs/methods/rlrr.md §1).

    Returns:
        Tensor: ``W'``, shape (out, in).
    """
    groups, in_features = scale_right.shape
    out_features = weight.shape[0]
    left = scale_left.view(groups, out_features // groups, 1)
    right = scale_right.view(groups, 1, in_features)
    return weight * (1 + left * right).view(out_features, in_features)


def fold_ssf(weight: Tensor, bias: Tensor, scale: Tensor,
             shift: Tensor) -> Tuple[Tensor, Tensor]:
    """Fold an SSF ``y * s + t`` into the affine layer that produces ``y``.

    Output channel ``c`` of the layer (row ``c`` of a Linear or Conv weight,
    entry ``c`` of a LayerNorm's ``gamma``) is multiplied by ``s[c]``; the
    bias becomes ``b * s + t``.

    Args:
        weight (Tensor): Output channels first, shape (C, ...).
        bias (Tensor): Shape (C, ).
        scale (Tensor): ``s``, shape (C, ).
        shift (Tensor): ``t``, shape (C, ).

    Returns:
        tuple[Tensor, Tensor]: The folded weight and bias.
    """
    per_channel = scale.view((-1, ) + (1, ) * (weight.dim() - 1))
    return weight * per_channel, bias * scale + shift


class RLRRLinear(nn.Linear):
    """A frozen Linear rescaled by RLRR: ``y = x W'^T + b + f``.

    ``weight`` and ``bias`` keep ``nn.Linear``'s state-dict names, so a
    pretrained checkpoint loads unchanged; the trainable ``scale_left``
    (out), ``scale_right`` (groups x in) and ``shift`` (out) are added.
    ``W'`` is recomputed on every forward pass (as the reference code);
    :meth:`merge` folds it once.  Which tensors train is decided by the
    owner (see :func:`rlrr_parameters`).

    Example:
        >>> qkv = RLRRLinear.from_linear(nn.Linear(768, 2304), groups=3)
        >>> sum(p.numel() for p in rlrr_parameters(qkv))
        6912

    Args:
        in_features (int): Input size.
        out_features (int): Output size, divisible by ``groups``.
        groups (int): Row slices with their own ``s_right`` (3 for a fused
            qkv Linear). Defaults to 1.
        init (str): ``'reference'`` or ``'identity'`` (module docstring).
            Defaults to ``'reference'``.
        device, dtype: As ``nn.Linear``.
    """

    trainable_names = ('scale_left', 'scale_right', 'shift')

    def __init__(self, in_features: int, out_features: int, groups: int = 1,
                 init: str = 'reference', device=None, dtype=None) -> None:
        super().__init__(
            in_features, out_features, bias=True, device=device, dtype=dtype)
        if groups < 1 or out_features % groups:
            raise ValueError(f'groups must divide out_features='
                             f'{out_features}, got groups={groups}')
        self.groups = groups
        self.init = check_init(init)
        factory = dict(device=device, dtype=dtype)
        self.scale_left = nn.Parameter(torch.empty(out_features, **factory))
        self.scale_right = nn.Parameter(
            torch.empty(groups, in_features, **factory))
        self.shift = nn.Parameter(torch.empty(out_features, **factory))
        self.reset_rlrr_parameters()

    @classmethod
    def from_linear(cls, linear: nn.Linear, groups: int = 1,
                    init: str = 'reference') -> 'RLRRLinear':
        """An RLRR Linear holding a copy of ``linear``'s weight and bias."""
        if linear.bias is None:
            raise ValueError('RLRR shifts the bias (b + f): the Linear must '
                             'have one (e.g. qkv_bias=True), got bias=None')
        weight = linear.weight
        rlrr = cls(linear.in_features, linear.out_features, groups, init,
                   device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            rlrr.weight.copy_(weight)
            rlrr.bias.copy_(linear.bias)
        return rlrr

    @torch.no_grad()
    def reset_rlrr_parameters(self) -> None:
        """Initialise ``scale_left``, ``scale_right`` and ``shift``."""
        right = math.sqrt(6 / self.in_features)  # Kaiming, fan_in = in
        nn.init.uniform_(self.scale_right, -right, right)
        if self.init == 'identity':
            nn.init.zeros_(self.scale_left)
        else:
            left = math.sqrt(6)  # Kaiming-uniform, fan_in = 1
            nn.init.uniform_(self.scale_left, -left, left)
        nn.init.zeros_(self.shift)

    def merged_weight(self) -> Tensor:
        """``W * (1 + s_left s_right^T)``."""
        return rlrr_weight(self.weight, self.scale_left, self.scale_right)

    def merged_bias(self) -> Tensor:
        """``b + f``."""
        return self.bias + self.shift

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.merged_weight(), self.merged_bias())

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the same outputs."""
        weight = self.weight
        linear = nn.Linear(self.in_features, self.out_features,
                           device=weight.device, dtype=weight.dtype)
        linear.weight.copy_(self.merged_weight())
        linear.bias.copy_(self.merged_bias())
        return linear

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, groups={self.groups}, ' \
               f'init={self.init!r}'


class SSF(nn.Module):
    """Scale and shift the last dimension per channel: ``y = x * s + t``.

    Used after a LayerNorm (:class:`SSFLayerNorm`) and on the patch
    embedding's tokens; :meth:`fold` merges it into the affine layer that
    comes before it.

    Args:
        num_features (int): Channels ``C``.
        init (str): ``'reference'`` (``s ~ N(1, 0.02)``,
            ``t ~ N(0, 0.02)``) or ``'identity'`` (``s = 1``, ``t = 0``).
            Defaults to ``'reference'``.
    """

    trainable_names = ('scale', 'shift')

    def __init__(self, num_features: int, init: str = 'reference') -> None:
        super().__init__()
        self.init = check_init(init)
        self.scale = nn.Parameter(torch.empty(num_features))
        self.shift = nn.Parameter(torch.empty(num_features))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise ``scale`` and ``shift``."""
        if self.init == 'identity':
            nn.init.ones_(self.scale)
            nn.init.zeros_(self.shift)
        else:
            nn.init.normal_(self.scale, mean=1., std=_SSF_INIT_STD)
            nn.init.normal_(self.shift, std=_SSF_INIT_STD)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift

    def fold(self, weight: Tensor, bias: Tensor) -> Tuple[Tensor, Tensor]:
        """The preceding layer's weight and bias with this SSF folded in."""
        return fold_ssf(weight, bias, self.scale, self.shift)

    def extra_repr(self) -> str:
        return f'{self.scale.numel()}, init={self.init!r}'


class SSFLayerNorm(nn.LayerNorm):
    """A LayerNorm followed by an :class:`SSF` (child ``ssf``).

    ``weight`` and ``bias`` keep ``nn.LayerNorm``'s names (the SSF adds
    ``ssf.scale`` and ``ssf.shift``); :meth:`merge` folds the SSF into them:
    ``gamma * s`` and ``beta * s + t``.

    Args:
        normalized_shape (int): Channels ``C`` (the last dimension).
        eps (float): As ``nn.LayerNorm``. Defaults to 1e-5.
        init (str): The SSF's initialisation. Defaults to ``'reference'``.
        device, dtype: As ``nn.LayerNorm``.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-5,
                 init: str = 'reference', device=None, dtype=None) -> None:
        super().__init__(normalized_shape, eps=eps, device=device,
                         dtype=dtype)
        self.ssf = SSF(normalized_shape, init).to(device=device, dtype=dtype)

    @classmethod
    def from_layer_norm(cls, norm: nn.Module,
                        init: str = 'reference') -> 'SSFLayerNorm':
        """An SSF LayerNorm holding a copy of ``norm``'s gamma and beta."""
        if not (type(norm) is nn.LayerNorm and norm.weight is not None
                and norm.bias is not None
                and len(norm.normalized_shape) == 1):
            raise TypeError('SSF folds into an affine nn.LayerNorm over the '
                            f'last dimension (norm_cfg type LN), got {norm}')
        weight = norm.weight
        new = cls(norm.normalized_shape[0], norm.eps, init,
                  device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            new.weight.copy_(weight)
            new.bias.copy_(norm.bias)
        return new

    def forward(self, x: Tensor) -> Tensor:
        return self.ssf(super().forward(x))

    @torch.no_grad()
    def merge(self) -> nn.LayerNorm:
        """A plain ``nn.LayerNorm`` with the same outputs."""
        weight = self.weight
        norm = nn.LayerNorm(self.normalized_shape, eps=self.eps,
                            device=weight.device, dtype=weight.dtype)
        folded_weight, folded_bias = self.ssf.fold(weight, self.bias)
        norm.weight.copy_(folded_weight)
        norm.bias.copy_(folded_bias)
        return norm


def rlrr_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """The parameters RLRR trains inside ``module``.

    ``scale_left``, ``scale_right`` and ``shift`` of every
    :class:`RLRRLinear`; ``scale`` and ``shift`` of every :class:`SSF`.
    """
    for m in module.modules():
        if isinstance(m, (RLRRLinear, SSF)):
            for name in m.trainable_names:
                yield getattr(m, name)
