"""SPT's structured modules: LoRA (parallel) and Adapter (sequential).

He et al., *Sensitivity-Aware Visual Parameter-Efficient Fine-Tuning*,
ICCV 2023 (docs/methods/spt.md §2).  A :class:`SPTLinear` is the ``nn.Linear``
it replaces (the same ``weight``/``bias`` parameters, so checkpoint names and
pretrained loading are unchanged) plus one branch per structured row slice:
the whole matrix (``'all'``) or, for MMPretrain's fused qkv, the ``q``,
``k`` or ``v`` third.

* **LoRA** (parallel): ``out[rows] += up(down(drop(x)))``; ``down`` (A) is
  Kaiming-uniform (a = sqrt(5)), ``up`` (B) is zero and there is **no**
  alpha / r scaling -- unlike ``mmpretrain.models.peft.LoRALinear``.  It is
  linear, so ``W[rows] += B @ A`` merges it exactly.
* **Adapter** (sequential on the layer output): ``out[rows] +=
  up(gelu(down(drop(out[rows]))))`` with ``up`` zero; on fc1 it acts before
  the MLP's GELU.  ``parallel=True`` (SPT's exception for attn.proj) feeds
  the layer *input* instead.  Not mergeable (GELU).

Both wrap their input in Dropout and their output in DropPath (0.1 each in
SPT; 0 switches either off).
"""
import math
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.drop import DropPath

from ...selection.spt_allocation import STRUCTURED_TYPES, slice_rows

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
    """LoRA: ``x A^T B^T``, no bias, no scaling; A Kaiming-uniform
    (a = sqrt(5)), B zero.

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
    """

    def __init__(self, in_features: int, out_features: int, rank: int,
                 dropout: float = 0.1, drop_path: float = 0.1):
        super().__init__(dropout, drop_path)
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.empty(out_features, rank))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        nn.init.zeros_(self.up)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.down), self.up)

    def extra_repr(self) -> str:
        return f'in={self.down.shape[1]}, rank={self.down.shape[0]}, ' \
               f'out={self.up.shape[0]}'


class SPTAdapter(_Branch):
    """Adapter: ``up(gelu(down(x)))`` with ``nn.Linear``'s default init for
    ``down`` and a zero ``up`` (weight and bias).

    Args:
        in_features (int): Input dimension.
        out_features (int): Rows of the slice it updates.
        rank (int): Bottleneck width r.
        dropout (float): Input dropout probability. Defaults to 0.1.
        drop_path (float): Output drop-path probability. Defaults to 0.1.
    """

    def __init__(self, in_features: int, out_features: int, rank: int,
                 dropout: float = 0.1, drop_path: float = 0.1):
        super().__init__(dropout, drop_path)
        self.down = nn.Linear(in_features, rank)
        self.act = nn.GELU()
        self.up = nn.Linear(rank, out_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
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
    """

    def __init__(self, linear: nn.Linear, structured_type: str,
                 parallel: bool):
        if structured_type not in STRUCTURED_TYPES:
            raise ValueError(f'structured_type must be one of '
                             f'{STRUCTURED_TYPES}, got {structured_type!r}')
        if structured_type == 'lora' and not parallel:
            raise ValueError('a LoRA branch is always parallel')
        super().__init__(linear.in_features, linear.out_features,
                         bias=linear.bias is not None, device='meta')
        self.weight = linear.weight
        self.bias = linear.bias
        self.structured_type = structured_type
        self.parallel = parallel
        self.row_ranges: Dict[str, Tuple[int, int]] = {}
        setattr(self, BRANCH_ATTRS[structured_type], nn.ModuleDict())

    @property
    def branches(self) -> nn.ModuleDict:
        return getattr(self, BRANCH_ATTRS[self.structured_type])

    def add_branch(self, label: str, rank: int, dropout: float,
                   drop_path: float) -> nn.Module:
        """Add the structured module of one row slice (``'all'``, ``'q'``,
        ``'k'`` or ``'v'``) and return it."""
        if label in self.branches:
            raise ValueError(f'slice {label!r} already has a branch')
        start, stop = slice_rows(label, self.out_features)
        rows = stop - start
        if self.structured_type == 'lora':
            branch = SPTLoRA(self.in_features, rows, rank, dropout, drop_path)
        else:
            branch = SPTAdapter(self.in_features if self.parallel else rows,
                                rows, rank, dropout, drop_path)
        self.branches[label] = branch
        self.row_ranges[label] = (start, stop)
        return branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
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
