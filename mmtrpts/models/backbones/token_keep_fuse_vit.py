"""MMPretrain ViT with [CLS]-attention token keep/fuse blocks."""
from contextlib import contextmanager
from typing import Iterable, List, Optional, Tuple

import torch
from mmpretrain.models import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.registry import MODELS

from ..utils.token_keep_fuse import (FUSE_MODES, ROUNDINGS, cls_attention,
                                     keep_fuse, num_kept)

#: Arguments only MMPretrain's ``ViTEVA02`` takes (a separate class with
#: RoPE and a SwiGLU MLP, which TokenKeepFuseViT does not extend).
_EVA02_OPTIONS = ('sub_ln', 'attn_drop_rate', 'proj_drop_rate')
#: Keys of an EVA-02 block in a state dict (``EVA02EndcoderLayer``).
_EVA02_KEYS = ('.mlp.w12.', '.mlp.w3.')
_NOT_EVA02 = (
    "EVA-02 is MMPretrain's separate class ViTEVA02: its rotary position "
    'embedding (RoPE) rotates every patch token by its grid position, which '
    'a kept or fused token no longer has, so TokenKeepFuseViT does not '
    "extend it. Use type='ViTEVA02' for parameter selection without token "
    'selection (docs/methods/trpts.md §12)')


@MODELS.register_module()
class TokenKeepFuseViT(VisionTransformer):
    """Drop-in ``VisionTransformer`` with token keep/fuse blocks (TR-PTS).

    In each selection block, after the attention residual and before the
    MLP, candidate tokens are scored by the block's own [CLS] attention
    (averaged over heads), the top ``floor(keep_rate * N)`` are kept and the
    rest are fused into one token (see
    :mod:`mmtrpts.models.utils.token_keep_fuse`).  The full attention keeps
    using ``scaled_dot_product_attention``; only the [CLS] row is computed
    again for scoring.  Train and eval behave identically.

    Without selection blocks the forward *is* ``VisionTransformer``'s (same
    outputs for the same weights).  All ``VisionTransformer`` arguments,
    the arch zoo, ``init_cfg``/pos-embed resizing and ``frozen_stages`` are
    inherited.  The selection blocks live in the persistent buffer
    ``keep_layer_mask``, so checkpoints restore them for ``tools/test.py``,
    inference and ``get_model``; TR-PTS's co-selection sets them after the
    Fisher pass through :meth:`set_keep_layers`.  A plain ViT checkpoint
    (no such buffer) loads without a missing-key report and keeps the
    configured blocks.

    Output types: ``'cls_token'`` and ``'raw'`` work unchanged;
    ``'avg_featmap'`` stays the mean over the *original* patches (each
    token weighted by the patches it stands for); ``'featmap'`` is
    impossible after reduction and raises.  Outputs of ``out_indices``
    below the last layer have a reduced, fixed token count.

    Token selection needs the [CLS] token (``with_cls_token=True``; any
    ``out_type`` but ``'featmap'``): every way of turning it on without one
    -- ``keep_layers``, :meth:`set_keep_layers`, a loaded
    ``keep_layer_mask``, a forward, :meth:`forward_with_cls_attention` --
    raises a ValueError naming the option (:meth:`check_token_selection`).
    The ViT configurations MMPretrain builds from ``VisionTransformer``
    (layer scale as in DINOv2, ``pre_norm`` and QuickGELU as in CLIP) are
    supported; EVA-02 (``ViTEVA02``, RoPE) is refused with a clear error.

    Example:
        >>> backbone = dict(
        ...     type='TokenKeepFuseViT', arch='b', img_size=224,
        ...     patch_size=16, keep_rate=0.7, keep_layers=(3, 6, 9),
        ...     keep_round='ceil', fuse='sum')  # Sparse-Tuning's setting

    Args:
        keep_rate (float): Fraction rho of candidate tokens kept in a
            selection block. Defaults to 0.95 (TR-PTS).
        keep_layers (Iterable[int]): 0-based selection blocks. Defaults to
            none (set later by co-selection, or no reduction).
        keep_round (str): ``'floor'`` (TR-PTS, default) or ``'ceil'``
            (EViT / Sparse-Tuning).
        fuse (str): ``'norm'`` (normalised weights, default), ``'sum'``
            (EViT-style) or ``'drop'`` (no fused token).
        detach_scores (bool): Stop gradients through the fusion weights.
            Defaults to False.
        *args, **kwargs: ``VisionTransformer`` arguments.
    """

    def __init__(self, *args, keep_rate: float = 0.95,
                 keep_layers: Iterable[int] = (), keep_round: str = 'floor',
                 fuse: str = 'norm', detach_scores: bool = False, **kwargs):
        eva02 = sorted(set(kwargs) & set(_EVA02_OPTIONS))
        if eva02:
            raise ValueError(f'TokenKeepFuseViT got the EVA-02 option(s) '
                             f'{eva02}: {_NOT_EVA02}')
        super().__init__(*args, **kwargs)
        num_kept(1, keep_rate, keep_round)  # validates both
        if fuse not in FUSE_MODES:
            raise ValueError(f'fuse must be one of {FUSE_MODES}, got '
                             f'{fuse!r}')
        assert keep_round in ROUNDINGS
        self.keep_rate = keep_rate
        self.keep_round = keep_round
        self.fuse = fuse
        self.detach_scores = detach_scores
        self.register_buffer(
            'keep_layer_mask', torch.zeros(self.num_layers, dtype=torch.bool))
        self.record_tokens = False
        self.token_records: List[dict] = []
        self._selection_enabled = True
        self.set_keep_layers(keep_layers)

    # -- configuration --------------------------------------------------------
    @property
    def keep_layers(self) -> List[int]:
        """The 0-based selection blocks, in depth order."""
        return self.keep_layer_mask.nonzero().flatten().tolist()

    def check_token_selection(self, context: str = 'token selection'
                              ) -> None:
        """Raise if this backbone's options rule out token selection.

        Args:
            context (str): What asked for token selection, for the message
                (e.g. ``'keep_layers=[3]'``).

        Raises:
            ValueError: Without a [CLS] token (``with_cls_token=False``),
                whose attention row scores the tokens, or with
                ``out_type='featmap'``, which needs the full patch grid.
        """
        if self.cls_token is None:
            raise ValueError(
                f'{context}: TokenKeepFuseViT scores tokens by the [CLS] '
                'attention, but this backbone was built with '
                f'with_cls_token=False (out_type={self.out_type!r}). Set '
                "with_cls_token=True (with out_type 'cls_token', "
                "'avg_featmap' or 'raw'), or use no token selection "
                '(empty keep_layers, no token_placement)')
        if self.out_type == 'featmap':
            raise ValueError(
                f"{context}: out_type='featmap' needs the full patch grid, "
                "which token selection removes; use 'cls_token', "
                "'avg_featmap' or 'raw', or no token selection")

    def set_keep_layers(self, layers: Iterable[int]) -> None:
        """Choose the selection blocks (replaces the current choice)."""
        layers = sorted({int(i) for i in layers})
        for i in layers:
            if not 0 <= i < self.num_layers:
                raise ValueError(f'keep layer {i} out of range for '
                                 f'{self.num_layers} layers')
        if layers:
            self.check_token_selection(f'keep_layers={layers}')
        mask = torch.zeros_like(self.keep_layer_mask)
        mask[layers] = True
        self.keep_layer_mask.copy_(mask)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """A checkpoint without ``keep_layer_mask`` is a plain ViT's.

        The buffer exists only in this class's checkpoints, so a
        pre-trained ``VisionTransformer`` checkpoint cannot hold it: its
        absence is not reported (the current selection blocks stay), even
        under ``strict=True``.  A checkpoint that holds it restores it; its
        blocks must fit this backbone (:meth:`check_token_selection`).  An
        EVA-02 state dict is refused: its blocks are not this class's.
        """
        blocks = prefix + 'layers.'
        eva02 = next((k for k in state_dict if k.startswith(blocks) and any(
            part in k for part in _EVA02_KEYS)), None)
        if eva02 is not None:
            raise ValueError(f'TokenKeepFuseViT cannot load the EVA-02 state '
                             f'dict (key {eva02!r}): {_NOT_EVA02}')
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
        key = prefix + 'keep_layer_mask'
        if key not in state_dict and key in missing_keys:
            missing_keys.remove(key)
        if bool(self.keep_layer_mask.any()):
            self.check_token_selection(
                f'the loaded keep_layer_mask (blocks {self.keep_layers})')

    @contextmanager
    def token_selection_disabled(self):
        """Run the dense model inside the block (e.g. the Fisher pass)."""
        previous = self._selection_enabled
        self._selection_enabled = False
        try:
            yield
        finally:
            self._selection_enabled = previous

    # -- forward --------------------------------------------------------------
    def forward(self, x):
        if not (self._selection_enabled and bool(self.keep_layer_mask.any())):
            return super().forward(x)
        if self.cls_token is None or self.out_type == 'featmap':
            # e.g. a keep_layer_mask written directly: name the blocks
            self.check_token_selection(f'forward with keep_layers='
                                       f'{self.keep_layers}')
        x, weights, assignment = self._embed(x)
        outs = []
        mask = self.keep_layer_mask.tolist()
        for i, layer in enumerate(self.layers):
            if mask[i]:
                x, weights, assignment, _ = self._attend_and_select(
                    i, layer, x, weights, assignment)
                x = layer.ffn(layer.ln2(x), identity=x)
            else:
                x = layer(x)
            x = self._finish_block(i, x, weights, outs)
        return tuple(outs)

    def forward_with_cls_attention(
            self, x: torch.Tensor) -> Tuple[tuple, List[torch.Tensor]]:
        """The dense forward (no token selection) plus every block's scores.

        Args:
            x (Tensor): ``[B, 3, H, W]`` images.

        Returns:
            tuple: The backbone outputs (as :meth:`forward`) and, per
            block, the ``[B, P]`` [CLS] attention over the patch tokens
            (head-averaged, the scores a selection block would rank; extra
            tokens left out, so a row sums to less than 1).

        Raises:
            ValueError: Without a [CLS] token or with ``out_type='featmap'``
                (:meth:`check_token_selection`).
        """
        self.check_token_selection('forward_with_cls_attention')
        x, weights, _ = self._embed(x)
        outs, scores = [], []
        for i, layer in enumerate(self.layers):
            attn_out, block_scores = self._attention_with_cls_scores(
                layer.attn, layer.ln1(x))
            scores.append(block_scores[:, self.num_extra_tokens:])
            x = layer.ffn(layer.ln2(x + attn_out), identity=x + attn_out)
            x = self._finish_block(i, x, weights, outs)
        return tuple(outs), scores

    def _embed(self, x):
        """Patch embedding, [CLS], positions and pre-norm, plus the token
        bookkeeping: ``(x, weights, assignment)``."""
        batch = x.shape[0]
        x, patch_resolution = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)
        x = x + resize_pos_embed(
            self.pos_embed, self.patch_resolution, patch_resolution,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        x = self.drop_after_pos(x)
        x = self.pre_norm(x)

        num_extra = self.num_extra_tokens
        weights = x.new_ones(batch, x.shape[1])
        weights[:, :num_extra] = 0
        assignment = None
        self.token_records = []
        if self.record_tokens:
            assignment = torch.arange(
                num_extra, x.shape[1], device=x.device).expand(batch, -1)
        return x, weights, assignment

    def _attend_and_select(self, index, layer, x, weights, assignment):
        """The attention residual of a selection block, then keep/fuse.

        Returns ``(x, weights, assignment, selection)``; ``selection`` is
        ``(scores, num_keep)`` as passed to :func:`keep_fuse` (so a caller
        can reduce other tensors of the same tokens identically), or None
        when the block keeps every token.
        """
        attn_out, scores = self._attention_with_cls_scores(
            layer.attn, layer.ln1(x))
        x = x + attn_out
        num_extra = self.num_extra_tokens
        candidates = x.shape[1] - num_extra
        keep = num_kept(candidates, self.keep_rate, self.keep_round)
        if keep == candidates:
            return x, weights, assignment, None
        scores = scores[:, num_extra:]
        if self.detach_scores:
            scores = scores.detach()
        result = keep_fuse(x, scores, num_extra, keep, self.fuse, weights,
                           assignment)
        if self.record_tokens:
            self.token_records.append(
                dict(layer=index, assignment=result.assignment.detach().cpu(),
                     num_tokens=result.x.shape[1]))
        return result.x, result.weights, result.assignment, (scores, keep)

    def _finish_block(self, index, x, weights, outs):
        """Final norm after the last block; collect ``out_indices``."""
        if index == len(self.layers) - 1 and self.final_norm:
            x = self.ln1(x)
        if index in self.out_indices:
            outs.append(self._format_reduced(x, weights))
        return x

    @staticmethod
    def _attention_with_cls_scores(attn, x):
        """mmpretrain ``MultiheadAttention.forward`` plus the [CLS] row."""
        batch, tokens, _ = x.shape
        qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads,
                                  attn.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        dropout = attn.attn_drop if attn.training else 0.
        out = attn.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(batch, tokens, attn.embed_dims)
        out = attn.proj(out)
        out = attn.out_drop(attn.gamma1(attn.proj_drop(out)))
        if attn.v_shortcut:
            out = v.squeeze(1) + out
        scores = cls_attention(q[:, :, :1], k, attn.head_dims**-0.5)
        return out, scores

    def _format_reduced(self, x, weights):
        if self.out_type != 'avg_featmap':
            return self._format_output(x, None)
        num_extra = self.num_extra_tokens
        patch_weights = weights[:, num_extra:].unsqueeze(-1)
        mean = (x[:, num_extra:] * patch_weights).sum(1) / \
            patch_weights.sum(1)
        return self.ln2(mean)

    def extra_repr(self) -> Optional[str]:
        return (f'keep_rate={self.keep_rate}, keep_layers={self.keep_layers},'
                f' keep_round={self.keep_round!r}, fuse={self.fuse!r}')
