"""SPT's structured modules: LoRA (parallel) and Adapter (sequential).

He et al., *Sensitivity-Aware Visual Parameter-Efficient Fine-Tuning*,
ICCV 2023 (docs/methods/spt.md §2).  A :class:`SPTLinear` is the ``nn.Linear``
it replaces (the same ``weight``/``bias`` parameters, so checkpoint names and
pretrained loading are unchanged) plus one branch per structured row slice:
the whole matrix (``'all'``) or, for MMPretrain's fused qkv, the ``q``,
``k`` or ``v`` third.

* **LoRA** (parallel): ``out[rows] += up(down(drop(x)))`` with **no**
  alpha / r scaling -- unlike ``mmpretrain.models.peft.LoRALinear``.  It is
  linear, so ``W[rows] += B @ A`` merges it exactly, whatever the
  initialisation.
* **Adapter** (sequential on the layer output): ``out[rows] +=
  up(gelu(down(drop(out[rows]))))``; on fc1 it acts before the MLP's GELU.
  ``parallel=True`` (SPT's exception for attn.proj) feeds the layer *input*
  instead.  Not mergeable (GELU).

Both wrap their input in Dropout and their output in DropPath (0.1 each in
SPT; 0 switches either off).  A parallel :class:`SPTLinear` can instead hold
one *shared* input Dropout, so that all its branches (the q, k and v LoRAs
of a fused qkv) see the same dropped input, as in the reference
(docs/methods/spt.md §2.1).

``branch_init`` (:mod:`~mmtrpts.models.peft.branch_init`): ``'zero'`` --
down-projections Kaiming-uniform (a = sqrt(5); the Adapter's ``down`` keeps
``nn.Linear``'s default bias), up-projections zero, so a branch adds 0 at
step 0; ``'reference'`` -- every projection trunc-normal(std 0.02, timm's
absolute bounds +-2), every bias zero: the state the reference trains from.
"""
import math
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.drop import DropPath

from ...selection.spt_allocation import STRUCTURED_TYPES, slice_rows
from .branch_init import check_branch_init, reference_init_

#: ``SPTLinear`` attribute holding the branches, per structured type; it
#: appears in state-dict keys (``<linear>.spt_lora.<label>.down``).
BRANCH_ATTRS = {t: f'spt_{t}' for t in STRUCTURED_TYPES}
#: Backbone buffer identifying the allocation a checkpoint was trained with.
CHECKSUM_BUFFER = 'spt_checksum'


class _Branch(nn.Module):
    """``drop_path(project(dropout(x)))``: the wrapping both modules share.

    Args:
        dropout (float): Input dropout probability (0: none).
        drop_path (float): Output drop-path probability (0: none).
    """

    def __init__(self, dropout: float, drop_path: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else \
            nn.Identity()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.project(self.dropout(x)))


class SPTLoRA(_Branch):
    """LoRA: ``x A^T B^T``, no bias, no scaling.

    ``branch_init='zero'``: A Kaiming-uniform (a = sqrt(5)), B zero;
    ``'reference'``: A and B trunc-normal(0.02) (see the module doc).

    ``down`` (A, ``[rank, in]``) and ``up`` (B, ``[out, rank]``) are plain
    parameters, not ``nn.Linear`` modules: MMPretrain's
    ``TransformerEncoderLayer.init_weights`` re-initialises every
    ``nn.Linear`` of its FFN, bias included.

    Args:
        in_features (int): Input dimension.
        out_features (int): Rows of the slice it updates.
        rank (int): Rank r.
        dropout (float): Input dropout probability. Defaults to 0.1.
        drop_path (float): Output drop-path probability. Defaults to 0.1.
        branch_init (str): ``'zero'`` or ``'reference'``. Defaults to
            ``'zero'``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int,
                 dropout: float = 0.1, drop_path: float = 0.1,
                 branch_init: str = 'zero'):
        super().__init__(dropout, drop_path)
        self.branch_init = check_branch_init(branch_init)
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.empty(out_features, rank))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise ``down`` and ``up`` the ``branch_init`` way."""
        if self.branch_init == 'reference':
            reference_init_(self.down)
            reference_init_(self.up)
            return
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        nn.init.zeros_(self.up)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.down), self.up)

    def extra_repr(self) -> str:
        return f'in={self.down.shape[1]}, rank={self.down.shape[0]}, ' \
               f'out={self.up.shape[0]}'


class SPTAdapter(_Branch):
    """Adapter: ``up(gelu(down(x)))``.

    ``branch_init='zero'``: ``nn.Linear``'s default init for ``down``
    (Kaiming-uniform weight, uniform bias) and a zero ``up`` (weight and
    bias); ``'reference'``: both weights trunc-normal(0.02), both biases
    zero (see the module doc).

    Args:
        in_features (int): Input dimension.
        out_features (int): Rows of the slice it updates.
        rank (int): Bottleneck width r.
        dropout (float): Input dropout probability. Defaults to 0.1.
        drop_path (float): Output drop-path probability. Defaults to 0.1.
        branch_init (str): ``'zero'`` or ``'reference'``. Defaults to
            ``'zero'``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int,
                 dropout: float = 0.1, drop_path: float = 0.1,
                 branch_init: str = 'zero'):
        super().__init__(dropout, drop_path)
        self.branch_init = check_branch_init(branch_init)
        self.down = nn.Linear(in_features, rank)
        self.act = nn.GELU()
        self.up = nn.Linear(rank, out_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise ``down`` and ``up`` the ``branch_init`` way."""
        if self.branch_init == 'reference':
            reference_init_(self.down.weight, self.down.bias)
            reference_init_(self.up.weight, self.up.bias)
            return
        self.down.reset_parameters()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class SPTLinear(nn.Linear):
    """An ``nn.Linear`` with SPT branches on row slices of its output.

    Args:
        linear (nn.Linear): The layer to extend; its ``weight`` and
            ``bias`` parameters are reused (not copied).
        structured_type (str): ``'lora'`` or ``'adapter'``.
        parallel (bool): Branches read the layer input (LoRA; the proj
            Adapter) instead of the layer output (Adapter).
        shared_dropout (float): Input dropout applied **once** to the layer
            input and fed to every branch (one mask for all of them, the
            reference's q/k/v LoRAs); the branches are then added with
            ``dropout=0``. Parallel layers only; 0 (default): none, each
            branch applies its own.
    """

    def __init__(self, linear: nn.Linear, structured_type: str,
                 parallel: bool, shared_dropout: float = 0.):
        if structured_type not in STRUCTURED_TYPES:
            raise ValueError(f'structured_type must be one of '
                             f'{STRUCTURED_TYPES}, got {structured_type!r}')
        if structured_type == 'lora' and not parallel:
            raise ValueError('a LoRA branch is always parallel')
        if shared_dropout and not parallel:
            raise ValueError('shared_dropout needs parallel branches: a '
                             'sequential branch reads its own output rows')
        super().__init__(linear.in_features, linear.out_features,
                         bias=linear.bias is not None, device='meta')
        self.weight = linear.weight
        self.bias = linear.bias
        self.structured_type = structured_type
        self.parallel = parallel
        self.row_ranges: Dict[str, Tuple[int, int]] = {}
        setattr(self, BRANCH_ATTRS[structured_type], nn.ModuleDict())
        self.shared_dropout = nn.Dropout(shared_dropout) \
            if shared_dropout > 0 else nn.Identity()

    @property
    def branches(self) -> nn.ModuleDict:
        return getattr(self, BRANCH_ATTRS[self.structured_type])

    def add_branch(self, label: str, rank: int, dropout: float,
                   drop_path: float, branch_init: str = 'zero') -> nn.Module:
        """Add the structured module of one row slice (``'all'``, ``'q'``,
        ``'k'`` or ``'v'``) and return it.

        Args:
            label (str): The row slice.
            rank (int): Rank / bottleneck width.
            dropout (float): The branch's own input dropout; must be 0 when
                the layer has a ``shared_dropout``.
            drop_path (float): The branch's output drop-path.
            branch_init (str): ``'zero'`` (default) or ``'reference'``.
        """
        if label in self.branches:
            raise ValueError(f'slice {label!r} already has a branch')
        if dropout > 0 and isinstance(self.shared_dropout, nn.Dropout):
            raise ValueError('this layer applies a shared input dropout; '
                             'add its branches with dropout=0')
        start, stop = slice_rows(label, self.out_features)
        rows = stop - start
        if self.structured_type == 'lora':
            branch = SPTLoRA(self.in_features, rows, rank, dropout, drop_path,
                             branch_init)
        else:
            branch = SPTAdapter(self.in_features if self.parallel else rows,
                                rows, rank, dropout, drop_path, branch_init)
        self.branches[label] = branch
        self.row_ranges[label] = (start, stop)
        return branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.parallel:  # one (possibly dropped) input for every branch
            x = self.shared_dropout(x)
        parts, done = [], 0
        for label, (start, stop) in sorted(self.row_ranges.items(),
                                           key=lambda item: item[1]):
            if start > done:
                parts.append(out[..., done:start])
            rows = out[..., start:stop]
            parts.append(rows + self.branches[label](
                x if self.parallel else rows))
            done = stop
        if done < out.shape[-1]:
            parts.append(out[..., done:])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, structured_type='
                f'{self.structured_type}, parallel={self.parallel}, '
                f'slices={sorted(self.row_ranges)}')
