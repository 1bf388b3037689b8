"""Sparse-Tuning: token keep/fuse plus Dense Adapters on a frozen ViT."""
from typing import List, Optional, Set

import torch
from mmengine.logging import print_log
from mmpretrain.registry import MODELS

from ..peft.branch_init import check_branch_init
from ..peft.dense_adapter import (DENSE_MODES, build_dense_adapters,
                                  stage_sum_schedule)
from ..utils.token_keep_fuse import keep_fuse
from .method_state import MethodStateMixin
from .token_keep_fuse_vit import TokenKeepFuseViT


@MODELS.register_module()
class SparseTuningViT(MethodStateMixin, TokenKeepFuseViT):
    """Sparse-Tuning backbone (Liu et al., arXiv 2405.14700).

    A frozen ``VisionTransformer`` with the [CLS]-attention token keep/fuse
    of :class:`TokenKeepFuseViT` -- by default Sparse-Tuning's: keep rate
    0.7 in 0-based blocks 3, 6 and 9, ``ceil`` rounding, unkept tokens
    fused into one *unnormalised* token (``fuse='sum'``; ViT-B/16 at 224:
    197 -> 140 -> 100 -> 72 tokens) -- plus one Dense Adapter per block
    (:mod:`mmtrpts.models.peft.dense_adapter`).  The adapter runs parallel
    to the FFN on the residual stream after pruning::

        x = x + attn(ln1(x))             # then keep/fuse in pruning blocks
        x = x + ffn(ln2(x)) + adapter(x)  # no scale

    ``dense`` picks the cross-layer connection:

    - ``'stage_sum'`` (default): the released code.  Per pruning stage the
      adapter outputs are summed and added to the stream again after the
      stage's last block, with the reference's quirks (the embeddings join
      stage 0's sum, so they re-enter the stream; the last block's adapter
      is left out of the last sum); see
      :func:`~mmtrpts.models.peft.dense_adapter.stage_sum_schedule`.  The
      stages follow ``keep_layers``, which must be non-empty and exclude
      block 0 (checked at construction and, after ``set_keep_layers`` or a
      loaded ``keep_layer_mask``, at every forward); ``keep_rate=1.0``
      keeps the stages without pruning.  With ``branch_init='zero'`` the
      adapter outputs are 0 at initialisation, but because of the re-added
      embeddings the output is *not* the frozen ViT's.
    - ``'paper'``: the paper figure.  Each adapter also reads the outputs of
      all earlier adapters, each with its own down-projection; at a pruning
      block the stored outputs are reduced with the stream's keep/fuse
      selection (same kept indices, same fusion weights).  No stage sums;
      with ``branch_init='zero'`` the output at initialisation equals
      :class:`TokenKeepFuseViT`'s.

    ``branch_init`` (docs/methods/sparse_tuning.md §2e): ``'zero'`` (the
    class default, kept for the embedded demo) initialises the adapters as
    the released ``Adapter`` class writes it (zero up-projections, output
    0); ``'reference'`` (the benchmark model base
    ``configs/_base_/models/sparse-tuning_vit-b16_in21k.py``) reproduces
    the state the released code trains from: its ``VisionTransformer``
    re-initialises every ``nn.Linear``, the adapters' included, to
    trunc-normal(0.02) with zero bias before the pre-trained weights are
    loaded, so the adapters do not output 0 at step 0.  Either way the
    adapters are initialised in :meth:`init_weights` *before* a
    ``Pretrained`` ``init_cfg`` is loaded (MMEngine loads it last), so
    neither the pre-trained weights nor adapters held by the checkpoint
    are overwritten.

    **Trainable set.** Fixed here, in ``__init__``: only the adapters
    (``adapters.*``) train in the backbone -- [CLS], positions, blocks and
    the final norm are frozen; the head, outside the backbone, trains
    normally.  Nothing changes ``requires_grad`` afterwards, and every
    adapter is in the graph at every step, so DDP with
    ``find_unused_parameters=False`` is safe.  ViT-B/16 with the default
    adapters trains 1,314,432 backbone parameters (``'stage_sum'``) or
    4,433,664 (``'paper'``).

    Not mergeable: the adapters are non-linear side branches and stay at
    inference.  No keep-rate warm-up (the reference's is a no-op).

    Example:
        >>> backbone = dict(
        ...     type='SparseTuningViT', arch='b', img_size=224,
        ...     patch_size=16, keep_rate=0.7, keep_layers=(3, 6, 9),
        ...     keep_round='ceil',
        ...     fuse='sum',  # fusing ON: the reference CLI's default is off
        ...     dense='stage_sum',
        ...     adapter_cfg=dict(hidden_dims=64, inner_dims=32),
        ...     branch_init='reference')  # the released code's effective init

    Args:
        keep_rate (float): Fraction of candidate tokens kept in a pruning
            block. Defaults to 0.7.
        keep_layers (Iterable[int]): 0-based pruning blocks. Defaults to
            ``(3, 6, 9)``.
        keep_round (str): ``'ceil'`` (default, Sparse-Tuning/EViT) or
            ``'floor'``.
        fuse (str): ``'sum'`` (default: fused token ``sum_i a_i x_i``, not
            normalised), ``'norm'`` or ``'drop'`` (the reference without
            ``--fuse_token``).
        dense (str): ``'stage_sum'`` (default) or ``'paper'``.
        adapter_cfg (dict, optional): Adapter sizes, e.g.
            ``dict(hidden_dims=64, inner_dims=32)`` (the defaults) for
            ``'stage_sum'``, ``dict(hidden_dims=64)`` for ``'paper'``.
        detach_scores (bool): Stop gradients through the fusion weights.
            Defaults to False.
        branch_init (str): ``'zero'`` (default) or ``'reference'`` (see
            above and :mod:`mmtrpts.models.peft.branch_init`).
        *args, **kwargs: ``VisionTransformer`` arguments (``out_type``
            ``'featmap'`` is not supported).
    """

    def __init__(self, *args, keep_rate: float = 0.7,
                 keep_layers=(3, 6, 9), keep_round: str = 'ceil',
                 fuse: str = 'sum', dense: str = 'stage_sum',
                 adapter_cfg: Optional[dict] = None,
                 detach_scores: bool = False, branch_init: str = 'zero',
                 **kwargs):
        if dense not in DENSE_MODES:
            raise ValueError(f'dense must be one of {DENSE_MODES}, got '
                             f'{dense!r}')
        check_branch_init(branch_init)
        if kwargs.get('out_type') == 'featmap':
            raise ValueError("out_type='featmap' needs the full patch grid, "
                             'which token pruning removes; use '
                             "'cls_token' or 'avg_featmap'")
        super().__init__(*args, keep_rate=keep_rate, keep_layers=(),
                         keep_round=keep_round, fuse=fuse,
                         detach_scores=detach_scores, **kwargs)
        self.dense = dense
        self.branch_init = branch_init
        self.adapters = build_dense_adapters(dense, self.embed_dims,
                                             self.num_layers, branch_init,
                                             **(adapter_cfg or {}))
        self.set_keep_layers(keep_layers)
        if dense == 'stage_sum':  # the stages follow keep_layers: check
            stage_sum_schedule(self.keep_layers, self.num_layers)
        for name, param in self.named_parameters():
            param.requires_grad = name.startswith('adapters.')
        trainable = sum(p.numel() for p in self.adapters.parameters())
        total = sum(p.numel() for p in self.parameters())
        print_log(
            f'SparseTuningViT: keep_rate={keep_rate} ({keep_round}) in '
            f'blocks {self.keep_layers}, fuse={fuse!r}, dense={dense!r}, '
            f'branch_init={branch_init!r}; '
            f'trainable {trainable:,} / {total:,} backbone parameters '
            '(Dense Adapters only)', logger='current')

    method_state_desc = 'the Dense Adapters'

    def method_state_keys(self) -> Set[str]:
        return {
            key
            for key in self.state_dict() if key.startswith('adapters.')
        }

    def forward(self, x):
        x, weights, assignment = self._embed(x)
        prune = (self.keep_layer_mask.tolist() if self._selection_enabled
                 else [False] * self.num_layers)
        stage_sum = self.dense == 'stage_sum'
        if stage_sum:
            summed, ends = stage_sum_schedule(self.keep_layers,
                                              self.num_layers)
        pending = x if stage_sum else None  # embeddings start stage 0's sum
        earlier: List[torch.Tensor] = []  # 'paper': earlier adapter outputs
        outs = []
        for i, layer in enumerate(self.layers):
            selection = None
            if prune[i]:
                x, weights, assignment, selection = self._attend_and_select(
                    i, layer, x, weights, assignment)
            else:
                x = x + layer.attn(layer.ln1(x))
            if stage_sum:
                delta = self.adapters[i](x)
            else:
                if selection is not None and earlier:
                    earlier = self._reduce_like_stream(earlier, selection)
                delta = self.adapters[i](x, earlier)
                earlier.append(delta)
            x = layer.ffn(layer.ln2(x), identity=x) + delta
            if stage_sum:
                if summed[i]:
                    pending = delta if pending is None else pending + delta
                if ends[i]:
                    if pending is not None:
                        x = x + pending
                    pending = None
            x = self._finish_block(i, x, weights, outs)
        return tuple(outs)

    def _reduce_like_stream(self, tensors, selection):
        """``S(.)`` of the paper: the stream's keep/fuse on other tensors of
        the same tokens (one op on their channel concatenation)."""
        scores, num_keep = selection
        reduced = keep_fuse(torch.cat(tensors, dim=-1), scores,
                            self.num_extra_tokens, num_keep, self.fuse).x
        return list(reduced.split(self.embed_dims, dim=-1))

    def extra_repr(self) -> Optional[str]:
        return (f'{super().extra_repr()}, dense={self.dense!r}, '
                f'branch_init={self.branch_init!r}')
