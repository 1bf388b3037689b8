"""Dense Adapters of Sparse-Tuning (Liu et al., arXiv 2405.14700).

Sparse-Tuning pairs [CLS]-attention token keep/fuse with one *Dense
Adapter* per ViT block, parallel to the FFN and fed the block's residual
stream after token pruning.  The paper figure and the released code
(``liuting20/Sparse-Tuning``, commit 0ee91e0) describe two different dense
connections (docs/methods/sparse_tuning.md §2); both are here, and every
result must say which one it used:

``'stage_sum'`` -- the released code (our default), :class:`StageSumAdapter`
    A small two-level adapter per block.  Across blocks the adapter outputs
    are summed per pruning stage (the token count is constant inside a
    stage) and each stage's sum is added to the residual stream once more
    at the stage's last block; see :func:`stage_sum_schedule` for the
    reference's two quirks (the input embeddings start stage 0's sum; the
    last block's adapter is left out of the last sum).
``'paper'`` -- the paper figure, :class:`PaperDenseAdapter`
    ``x_DA_N = W_up ReLU(W_down_1 x_N + sum_j W_down_(j+1) S(x_DA_j))``:
    one down-projection per input, the inputs being the block's stream and
    the outputs of *all* earlier adapters (our reading of the figure's
    "..."), where ``S`` reduces an earlier output with the same keep/fuse
    selections as the stream.  No stage sums.  Which variant produced the
    paper's numbers is unknown; no checkpoints were released.

Both take ``branch_init`` (:mod:`~mmtrpts.models.peft.branch_init`):
``'zero'`` (default) is the adapter's own constructor init (Kaiming-uniform
downs, zero ups and biases: output exactly 0); ``'reference'`` is the state
the released code trains from -- its ``VisionTransformer`` re-initialises
every ``nn.Linear`` afterwards (``self.apply(_init_vit_weights)``), so all
projections are trunc-normal(0.02) with zero biases and the adapters do not
output 0 at step 0 (docs/methods/sparse_tuning.md §2e).
"""
import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule, ModuleList
from torch import Tensor, nn

from .branch_init import check_branch_init, reference_init_linears_

DENSE_MODES = ('stage_sum', 'paper')


class StageSumAdapter(BaseModule):
    """One Dense Adapter of the released Sparse-Tuning code.

    With ``D``/``U`` the down/up projections of docs/methods/sparse_tuning.md
    §2a::

        h0 = ReLU(D1 x)           D1: C -> hidden
        s1 = D2 h0                D2: hidden -> inner
        s2 = U1 s1                U1: inner -> hidden
        h  = D3 [s1; s2] + h0     D3: inner + hidden -> hidden
        out = U2 h                U2: hidden -> C

    ``branch_init='zero'``: D1, D2, D3 weights are Kaiming-uniform
    (a = sqrt(5)), U1 and U2 weights and all biases zero, so the output is
    exactly 0 at initialisation.  ``'reference'``: all five weights
    trunc-normal(0.02), all biases zero (the released code's effective
    init; about 0.06 per output channel on a unit-variance ViT-B input).
    ViT-B with the released sizes (768 -> 64 -> 32) has 109,536 parameters
    per adapter; the reference's commented-out wider variant is
    ``hidden_dims=256, inner_dims=128``.

    Args:
        embed_dims (int): Channels C of the residual stream.
        hidden_dims (int): Width of D1/U1/D3. Defaults to 64.
        inner_dims (int): Width of D2. Defaults to 32.
        branch_init (str): ``'zero'`` or ``'reference'``. Defaults to
            ``'zero'``.
    """

    def __init__(self, embed_dims: int, hidden_dims: int = 64,
                 inner_dims: int = 32, branch_init: str = 'zero'):
        super().__init__()
        self.branch_init = check_branch_init(branch_init)
        self.down1 = nn.Linear(embed_dims, hidden_dims)
        self.down2 = nn.Linear(hidden_dims, inner_dims)
        self.up1 = nn.Linear(inner_dims, hidden_dims)
        self.down3 = nn.Linear(inner_dims + hidden_dims, hidden_dims)
        self.up2 = nn.Linear(hidden_dims, embed_dims)
        self.init_weights()

    def init_weights(self) -> None:
        """``'zero'``: Kaiming-uniform downs, zero ups and biases (output
        0); ``'reference'``: every Linear trunc-normal(0.02), zero bias."""
        _init_projections(self, [self.down1, self.down2, self.down3],
                          [self.up1, self.up2])

    def forward(self, x: Tensor) -> Tensor:
        h0 = F.relu(self.down1(x))
        s1 = self.down2(h0)
        s2 = self.up1(s1)
        return self.up2(self.down3(torch.cat([s1, s2], dim=-1)) + h0)


class PaperDenseAdapter(BaseModule):
    """One Dense Adapter as drawn in the paper (docs/methods/sparse_tuning.md
    §2b).

    The adapter of block ``N`` (0-based) has ``N + 1`` down-projections:
    ``down[0]`` for the block's stream, ``down[j + 1]`` for the (already
    token-reduced) output of adapter ``j``.  Only ``down[0]`` has a bias
    (several biases summed before the ReLU are one bias).  Initialised like
    :class:`StageSumAdapter`: ``branch_init='zero'`` gives Kaiming-uniform
    downs and a zero up-projection and biases, so the output is 0 at
    initialisation; ``'reference'`` applies the released code's timm init
    to every Linear (trunc-normal 0.02, zero bias) -- the reference has no
    such adapter, this is what its initialisation would do to one.

    Args:
        embed_dims (int): Channels C of the residual stream.
        num_inputs (int): The stream plus the earlier adapters (``N + 1``).
        hidden_dims (int): Bottleneck width. Defaults to 64.
        branch_init (str): ``'zero'`` or ``'reference'``. Defaults to
            ``'zero'``.
    """

    def __init__(self, embed_dims: int, num_inputs: int,
                 hidden_dims: int = 64, branch_init: str = 'zero'):
        super().__init__()
        self.branch_init = check_branch_init(branch_init)
        if num_inputs < 1:
            raise ValueError(f'num_inputs must be >= 1, got {num_inputs}')
        self.down = nn.ModuleList(
            nn.Linear(embed_dims, hidden_dims, bias=j == 0)
            for j in range(num_inputs))
        self.up = nn.Linear(hidden_dims, embed_dims)
        self.init_weights()

    def init_weights(self) -> None:
        """``'zero'``: Kaiming-uniform downs, zero up and biases (output
        0); ``'reference'``: every Linear trunc-normal(0.02), zero bias."""
        _init_projections(self, list(self.down), [self.up])

    def forward(self, x: Tensor, earlier: Sequence[Tensor]) -> Tensor:
        """``earlier``: the outputs of all earlier adapters, on ``x``'s
        tokens (one per extra down-projection)."""
        if len(earlier) != len(self.down) - 1:
            raise ValueError(f'expected {len(self.down) - 1} earlier adapter '
                             f'outputs, got {len(earlier)}')
        hidden = self.down[0](x)
        for down, previous in zip(self.down[1:], earlier):
            hidden = hidden + down(previous)
        return self.up(F.relu(hidden))


def _init_projections(adapter: nn.Module, downs: Sequence[nn.Linear],
                      ups: Sequence[nn.Linear]) -> None:
    if adapter.branch_init == 'reference':
        reference_init_linears_(adapter)
        return
    with torch.no_grad():
        for layer in downs:
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
        for layer in ups:
            nn.init.zeros_(layer.weight)
        for layer in [*downs, *ups]:
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def build_dense_adapters(dense: str, embed_dims: int, num_layers: int,
                         branch_init: str = 'zero',
                         **adapter_kwargs) -> nn.ModuleList:
    """One Dense Adapter per block.

    Args:
        dense (str): ``'stage_sum'`` or ``'paper'`` (see the module doc).
        embed_dims (int): Channels of the residual stream.
        num_layers (int): Number of blocks.
        branch_init (str): ``'zero'`` (default) or ``'reference'`` (see the
            module doc).
        **adapter_kwargs: :class:`StageSumAdapter` (``hidden_dims``,
            ``inner_dims``) or :class:`PaperDenseAdapter` (``hidden_dims``)
            arguments.

    Returns:
        nn.ModuleList: mmengine's, so ``init_weights`` reaches the adapters
        (a backbone's ``Pretrained`` init is applied after them).
    """
    if dense == 'stage_sum':
        adapters = [
            StageSumAdapter(embed_dims, branch_init=branch_init,
                            **adapter_kwargs) for _ in range(num_layers)
        ]
    elif dense == 'paper':
        adapters = [
            PaperDenseAdapter(embed_dims, i + 1, branch_init=branch_init,
                              **adapter_kwargs) for i in range(num_layers)
        ]
    else:
        raise ValueError(f'dense must be one of {DENSE_MODES}, got {dense!r}')
    return ModuleList(adapters)


def stage_sum_schedule(keep_layers: Sequence[int],
                       num_layers: int) -> Tuple[List[bool], List[bool]]:
    """Where the released code's cross-layer sums are formed and added.

    The token-pruning blocks split the network into stages (the token count
    is constant inside one).  Stage ``s`` covers blocks
    ``keep_layers[s-1] .. keep_layers[s] - 1`` (stage 0 starts at block 0,
    the last ends at the last block).  The sum of a stage's adapter outputs
    is added to the stream after the stage's last block, with the
    reference's two quirks:

    - stage 0's sum also holds the input embeddings (the stream entering
      block 0), which thus re-enter the residual stream;
    - the last block's adapter is left out of the last stage's sum.

    For ViT-B with ``keep_layers=(3, 6, 9)`` this is the table of
    docs/methods/sparse_tuning.md §2a: embeddings + DA0..DA2 at block 2,
    DA3..DA5 at 5, DA6..DA8 at 8, DA9 + DA10 at 11.

    Args:
        keep_layers (Sequence[int]): 0-based token-pruning blocks.
        num_layers (int): Number of blocks.

    Returns:
        tuple[list[bool], list[bool]]: Per block, whether its adapter output
        joins its stage's sum, and whether a stage's sum is added after it.
    """
    layers = sorted({int(i) for i in keep_layers})
    if not layers:
        raise ValueError(
            "dense='stage_sum' groups the adapter sums by pruning stage and "
            'needs keep_layers; got none (keep_rate=1.0 with keep_layers '
            'set runs the stages without pruning)')
    if layers[0] < 1 or layers[-1] >= num_layers:
        raise ValueError(
            f"dense='stage_sum' needs keep_layers in [1, {num_layers - 1}] "
            f'(stage 0, which re-adds the embeddings, must hold a block), '
            f'got {layers}')
    ends = [False] * num_layers
    for boundary in layers:
        ends[boundary - 1] = True
    ends[-1] = True
    summed = [True] * num_layers
    summed[-1] = False
    return summed, ends
