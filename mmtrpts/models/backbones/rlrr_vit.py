"""MMPretrain ViT fine-tuned with RLRR (CVPR 2024)."""
from typing import Set

import numpy as np
import torch.nn as nn
from mmcv.cnn.bricks.transformer import FFN
from mmpretrain.models import VisionTransformer
from mmpretrain.registry import MODELS

from ..peft.rlrr import (SSF, RLRRLinear, SSFLayerNorm, check_init,
                         rlrr_parameters)
from .method_state import MethodStateMixin


@MODELS.register_module()
class RLRRViT(MethodStateMixin, VisionTransformer):
    """``VisionTransformer`` with RLRR and SSF, everything else frozen.

    RLRR (*Low-Rank Rescaled Vision Transformer Fine-Tuning: A Residual
    Design Approach*, Dong et al., CVPR 2024; docs/methods/rlrr.md) rescales
    every frozen Linear as ``W * (1 + s_left s_right^T)``, ``b + f``
    (:class:`~mmtrpts.models.peft.rlrr.RLRRLinear`) and adds SSF
    scale/shift vectors:

    - RLRR on ``attn.qkv`` (one ``s_right`` per q/k/v slice,
      docs/methods/rlrr.md §1), ``attn.proj``, ``ffn.layers.0.0`` (fc1) and
      ``ffn.layers.1`` (fc2) of every block;
    - SSF after ``ln1`` and ``ln2`` of every block and after the final norm
      ``ln1`` (:class:`~mmtrpts.models.peft.rlrr.SSFLayerNorm`, keys
      ``*.ssf.{scale,shift}``), and on the patch-embedding tokens before the
      [CLS] token is concatenated (in ``patch_embed.norm``, mmcv
      ``PatchEmbed``'s post-projection slot).

    ``weight``/``bias`` keep their names, so plain ViT checkpoints load
    unchanged (one INFO line says that they hold no RLRR/SSF vectors,
    :class:`~mmtrpts.models.backbones.method_state.MethodStateMixin`).
    The trainable set is fixed here (DDP-safe): only the RLRR and SSF vectors; ``pos_embed``,
    ``cls_token``, all weights, biases and norms (also ``pre_norm`` and the
    ``avg_featmap`` norm ``ln2``, which get no SSF) are frozen.  The head
    lives outside the backbone and trains normally.  ``frozen_stages`` then
    freezes whole stages (their RLRR/SSF vectors included) as in
    ``VisionTransformer``; ``out_type``, ``out_indices``, ``init_cfg`` and
    the pos-embed resizing are inherited.  ViT-B/16 trains 288,768 backbone
    parameters.  ``mmtrpts.checkpoints.merge_rlrr`` (and
    ``tools/model_converters/merge.py rlrr``) fold a trained model into a
    plain ``VisionTransformer`` checkpoint.

    ``branch_dropout`` is the reference's "drop_path": element-wise
    ``Dropout(p)`` on each residual branch (after the attention projection
    and after fc2), ``p = linspace(0, branch_dropout, depth)``.  It is not
    stochastic depth (mmpretrain's ``drop_path_rate``), and the two cannot
    be combined.

    Example:
        >>> backbone = dict(
        ...     type='RLRRViT', arch='b', img_size=224, patch_size=16,
        ...     rlrr_init='reference', branch_dropout=0.1,
        ...     init_cfg=dict(type='Pretrained', checkpoint=CKPT,
        ...                   prefix='backbone.'))

    Args:
        rlrr_init (str): ``'reference'`` (the official code's random
            rescaling: step 0 is *not* the pretrained model) or
            ``'identity'`` (``s_left = 0``, SSF scale 1 and shift 0: step 0
            is exactly the pretrained model). Defaults to ``'reference'``.
        branch_dropout (float): The last block's residual-branch dropout.
            Defaults to 0.
        *args, **kwargs: ``VisionTransformer`` arguments; ``qkv_bias`` must
            be True, ``pre_norm`` False and ``ffn_type`` ``'origin'``.
    """

    def __init__(self, *args, rlrr_init: str = 'reference',
                 branch_dropout: float = 0., **kwargs):
        drop_path_rate = kwargs.get('drop_path_rate', 0.)
        if not 0 <= branch_dropout < 1:
            raise ValueError(
                f'branch_dropout must be in [0, 1), got {branch_dropout}')
        if branch_dropout and drop_path_rate:
            raise ValueError(
                f'branch_dropout={branch_dropout} replaces the residual-'
                f'branch DropPath; drop_path_rate must be 0, got '
                f'{drop_path_rate}')
        super().__init__(*args, **kwargs)
        self.rlrr_init = check_init(rlrr_init, 'rlrr_init')
        self.branch_dropout = branch_dropout

        patch_embed = self.patch_embed
        if patch_embed.norm is not None:
            raise ValueError('RLRRViT puts the patch SSF in patch_embed.norm;'
                             ' patch_cfg must not set norm_cfg, got '
                             f'{patch_embed.norm}')
        if patch_embed.projection.bias is None:
            raise ValueError('the patch SSF folds into the patch-embedding '
                             'bias; pre_norm must be False, got True')
        patch_embed.norm = SSF(self.embed_dims, rlrr_init)
        dropouts = np.linspace(0, branch_dropout, self.num_layers)
        for layer, p in zip(self.layers, dropouts):
            self._adapt_layer(layer, float(p))
        if self.final_norm:
            self.ln1 = SSFLayerNorm.from_layer_norm(self.ln1, rlrr_init)

        self.requires_grad_(False)
        for param in rlrr_parameters(self):
            param.requires_grad_(True)
        if self.frozen_stages > 0:
            self._freeze_stages()

    method_state_desc = 'the RLRR and SSF vectors'

    def method_state_keys(self) -> Set[str]:
        ids = {id(param) for param in rlrr_parameters(self)}
        return {
            name
            for name, param in self.named_parameters()
            if id(param) in ids
        }

    def _adapt_layer(self, layer: nn.Module, dropout: float) -> None:
        """RLRR on the 4 Linears, SSF after both norms, branch dropout."""
        attn, ffn = layer.attn, layer.ffn
        if not (isinstance(ffn, FFN) and ffn.num_fcs == 2):
            raise ValueError("RLRRViT adapts the 2-layer MLP of ffn_type="
                             f"'origin', got {type(ffn).__name__}")
        init = self.rlrr_init
        attn.qkv = RLRRLinear.from_linear(attn.qkv, groups=3, init=init)
        attn.proj = RLRRLinear.from_linear(attn.proj, init=init)
        ffn.layers[0][0] = RLRRLinear.from_linear(ffn.layers[0][0], init=init)
        ffn.layers[1] = RLRRLinear.from_linear(ffn.layers[1], init=init)
        layer.ln1 = SSFLayerNorm.from_layer_norm(layer.ln1, init)
        layer.ln2 = SSFLayerNorm.from_layer_norm(layer.ln2, init)
        if self.branch_dropout:
            attn.out_drop = nn.Dropout(dropout)
            ffn.dropout_layer = nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return (f'rlrr_init={self.rlrr_init!r}, '
                f'branch_dropout={self.branch_dropout}')
