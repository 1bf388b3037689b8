"""Convert Google ViT ``.npz`` and timm ViT weights to MMPretrain.

The output is a state dict for MMPretrain's ``VisionTransformer`` backbone
(keys prefixed with ``backbone.``) and, optionally, its
``VisionTransformerClsHead`` (keys prefixed with ``head.``), so that a
config can use either::

    model = dict(backbone=dict(init_cfg=dict(
        type='Pretrained', checkpoint=PATH, prefix='backbone.')))
    load_from = PATH

Every source key is either converted or, for the classification head when
``keep_head=False``, dropped on purpose.  Anything else raises an error:
nothing is skipped silently.

This module only needs ``torch`` and ``numpy``.
"""
import os.path as osp
import re
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import torch

__all__ = ['npz_to_mmpretrain', 'timm_to_mmpretrain', 'convert_file']

BACKBONE_PREFIX = 'backbone.'
HEAD_PREFIX = 'head.'
NPZ_SUFFIXES = ('.npz', )
TORCH_SUFFIXES = ('.pth', '.pt', '.bin')

# Head keys of each format: dropped unless ``keep_head`` is set.
_NPZ_HEAD_KEYS = ('head/kernel', 'head/bias', 'pre_logits/kernel',
                  'pre_logits/bias')
_TIMM_HEAD_KEYS = ('head.weight', 'head.bias', 'pre_logits.fc.weight',
                   'pre_logits.fc.bias')

_NPZ_BLOCK = 'Transformer/encoderblock_{}/'
_NPZ_ATTN = 'MultiHeadDotProductAttention_1/'
_NPZ_POS = 'Transformer/posembed_input/pos_embedding'

StateDict = 'OrderedDict[str, torch.Tensor]'


class _Source:
    """Read a mapping of arrays key by key and track what was consumed.

    Args:
        data (Mapping): The source arrays or tensors.
        name (str): Describes the source (file and format) in errors.
    """

    def __init__(self, data: Mapping[str, Any], name: str) -> None:
        self.data = data
        self.name = name
        self.remaining: Set[str] = set(data.keys())

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def peek(self, key: str, ndim: Optional[int] = None) -> Any:
        """Return ``data[key]`` without consuming it.

        Raises:
            KeyError: If ``key`` is missing.
            ValueError: If the value does not have ``ndim`` dimensions.
        """
        if key not in self.data:
            raise KeyError(f'Missing key {key!r} in {self.name}.')
        value = self.data[key]
        if not hasattr(value, 'shape'):
            raise ValueError(f'Key {key!r} in {self.name} is a '
                             f'{type(value).__name__}, not an array.')
        if ndim is not None and len(value.shape) != ndim:
            raise ValueError(f'Key {key!r} in {self.name} has shape '
                             f'{tuple(value.shape)}, expected {ndim} '
                             'dimensions.')
        return value

    def take(self, key: str, shape: Sequence[int]) -> Any:
        """Consume ``data[key]`` and check that its shape is ``shape``.

        Raises:
            KeyError: If ``key`` is missing.
            ValueError: If the shape differs from ``shape``.
        """
        value = self.peek(key)
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f'Key {key!r} in {self.name} has shape '
                             f'{tuple(value.shape)}, expected '
                             f'{tuple(shape)}.')
        self.remaining.discard(key)
        return value

    def drop(self, keys: Sequence[str]) -> None:
        """Mark ``keys`` as intentionally dropped."""
        self.remaining.difference_update(keys)

    def check_consumed(self) -> None:
        """Raise if any source key was neither converted nor dropped."""
        if self.remaining:
            keys = sorted(self.remaining)
            raise ValueError(f'{len(keys)} unconsumed key(s) in {self.name} '
                             f'(not a supported ViT layout?): {keys}')

    def infer_depth(self, pattern: str, first_key: str) -> int:
        """Number of blocks: one more than the largest block index.

        Args:
            pattern (str): A regex whose group 1 is the block index.
            first_key (str): Reported as missing when there are no blocks.
        """
        regex = re.compile(pattern)
        indices = [int(m.group(1)) for m in map(regex.match, self.data) if m]
        if not indices:
            raise KeyError(f'Missing key {first_key!r} in {self.name} '
                           '(no transformer blocks found).')
        return max(indices) + 1


def _tensor(value: Any,
            transpose: Optional[Sequence[int]] = None,
            reshape: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Copy an array or tensor into a new contiguous tensor.

    ``reshape`` is applied first, then ``transpose`` (a permutation).
    """
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
    else:
        tensor = torch.from_numpy(np.array(value, copy=True))
    if reshape is not None:
        tensor = tensor.reshape(*reshape)
    if transpose is not None:
        tensor = tensor.permute(*transpose)
    return tensor.contiguous().clone()


def _convert_npz(npz: Mapping[str, np.ndarray], keep_head: bool,
                 name: str) -> Tuple[StateDict, Dict[str, Any]]:
    """Convert a Google ViT npz mapping; also return the inferred arch."""
    src = _Source(npz, name)
    dim = src.peek('cls', ndim=3).shape[-1]
    kernel = src.peek('embedding/kernel', ndim=4)
    patch_h, patch_w, in_chans = kernel.shape[:3]
    num_tokens = src.peek(_NPZ_POS, ndim=3).shape[1]
    depth = src.infer_depth(r'^Transformer/encoderblock_(\d+)/',
                            _NPZ_BLOCK.format(0) + 'LayerNorm_0/scale')
    block0 = _NPZ_BLOCK.format(0)
    heads, head_dim = src.peek(
        block0 + _NPZ_ATTN + 'query/kernel', ndim=3).shape[1:]
    if heads * head_dim != dim:
        raise ValueError(f'Key {block0 + _NPZ_ATTN}query/kernel in {name} '
                         f'has {heads} heads x {head_dim} channels, which '
                         f'does not match the embed dim {dim}.')
    mlp_dim = src.peek(block0 + 'MlpBlock_3/Dense_0/kernel', ndim=2).shape[1]

    out: StateDict = OrderedDict()
    bb = BACKBONE_PREFIX

    def dense(src_key: str, dst_key: str, d_in: int, d_out: int) -> None:
        out[dst_key + '.weight'] = _tensor(
            src.take(src_key + '/kernel', (d_in, d_out)), transpose=(1, 0))
        out[dst_key + '.bias'] = _tensor(
            src.take(src_key + '/bias', (d_out, )))

    def norm(src_key: str, dst_key: str) -> None:
        out[dst_key + '.weight'] = _tensor(
            src.take(src_key + '/scale', (dim, )))
        out[dst_key + '.bias'] = _tensor(src.take(src_key + '/bias', (dim, )))

    out[bb + 'cls_token'] = _tensor(src.take('cls', (1, 1, dim)))
    out[bb + 'pos_embed'] = _tensor(src.take(_NPZ_POS, (1, num_tokens, dim)))
    out[bb + 'patch_embed.projection.weight'] = _tensor(
        src.take('embedding/kernel', (patch_h, patch_w, in_chans, dim)),
        transpose=(3, 2, 0, 1))
    out[bb + 'patch_embed.projection.bias'] = _tensor(
        src.take('embedding/bias', (dim, )))

    for i in range(depth):
        s = _NPZ_BLOCK.format(i)
        d = f'{bb}layers.{i}.'
        norm(s + 'LayerNorm_0', d + 'ln1')
        weights, biases = [], []
        for part in ('query', 'key', 'value'):
            key = s + _NPZ_ATTN + part
            weights.append(
                _tensor(
                    src.take(key + '/kernel', (dim, heads, head_dim)),
                    reshape=(dim, dim),
                    transpose=(1, 0)))
            biases.append(
                _tensor(
                    src.take(key + '/bias', (heads, head_dim)),
                    reshape=(dim, )))
        out[d + 'attn.qkv.weight'] = torch.cat(weights, dim=0)
        out[d + 'attn.qkv.bias'] = torch.cat(biases, dim=0)
        key = s + _NPZ_ATTN + 'out'
        out[d + 'attn.proj.weight'] = _tensor(
            src.take(key + '/kernel', (heads, head_dim, dim)),
            reshape=(dim, dim),
            transpose=(1, 0))
        out[d + 'attn.proj.bias'] = _tensor(src.take(key + '/bias', (dim, )))
        norm(s + 'LayerNorm_2', d + 'ln2')
        dense(s + 'MlpBlock_3/Dense_0', d + 'ffn.layers.0.0', dim, mlp_dim)
        dense(s + 'MlpBlock_3/Dense_1', d + 'ffn.layers.1', mlp_dim, dim)
    norm('Transformer/encoder_norm', bb + 'ln1')

    head_info: Dict[str, Any] = {}
    if keep_head:
        head_in = dim
        if 'pre_logits/kernel' in src:
            head_in = src.peek('pre_logits/kernel', ndim=2).shape[1]
            dense('pre_logits', HEAD_PREFIX + 'layers.pre_logits', dim,
                  head_in)
            head_info['hidden_dim'] = head_in
        num_classes = src.peek('head/kernel', ndim=2).shape[1]
        dense('head', HEAD_PREFIX + 'layers.head', head_in, num_classes)
        head_info['num_classes'] = num_classes
    else:
        src.drop(_NPZ_HEAD_KEYS)
    src.check_consumed()

    arch = dict(
        embed_dims=int(dim),
        num_layers=depth,
        num_heads=int(heads),
        feedforward_channels=int(mlp_dim),
        patch_size=int(patch_h),
        num_tokens=int(num_tokens))
    arch.update(head_info)
    return out, arch


def _convert_timm(state_dict: Mapping[str, torch.Tensor], keep_head: bool,
                  name: str) -> Tuple[StateDict, Dict[str, Any]]:
    """Convert a timm ViT state dict; also return the inferred arch."""
    src = _Source(state_dict, name)
    dim = src.peek('cls_token', ndim=3).shape[-1]
    weight = src.peek('patch_embed.proj.weight', ndim=4)
    in_chans, patch_h, patch_w = weight.shape[1:]
    num_tokens = src.peek('pos_embed', ndim=3).shape[1]
    depth = src.infer_depth(r'^blocks\.(\d+)\.', 'blocks.0.norm1.weight')
    mlp_dim = src.peek('blocks.0.mlp.fc1.weight', ndim=2).shape[0]

    out: StateDict = OrderedDict()
    bb = BACKBONE_PREFIX

    def copy(src_key: str, dst_key: str, shape: Sequence[int]) -> None:
        out[dst_key] = _tensor(src.take(src_key, shape))

    def linear(src_key: str, dst_key: str, d_in: int, d_out: int) -> None:
        copy(src_key + '.weight', dst_key + '.weight', (d_out, d_in))
        copy(src_key + '.bias', dst_key + '.bias', (d_out, ))

    def norm(src_key: str, dst_key: str) -> None:
        copy(src_key + '.weight', dst_key + '.weight', (dim, ))
        copy(src_key + '.bias', dst_key + '.bias', (dim, ))

    copy('cls_token', bb + 'cls_token', (1, 1, dim))
    copy('pos_embed', bb + 'pos_embed', (1, num_tokens, dim))
    copy('patch_embed.proj.weight', bb + 'patch_embed.projection.weight',
         (dim, in_chans, patch_h, patch_w))
    copy('patch_embed.proj.bias', bb + 'patch_embed.projection.bias', (dim, ))
    for i in range(depth):
        s = f'blocks.{i}.'
        d = f'{bb}layers.{i}.'
        norm(s + 'norm1', d + 'ln1')
        linear(s + 'attn.qkv', d + 'attn.qkv', dim, 3 * dim)
        linear(s + 'attn.proj', d + 'attn.proj', dim, dim)
        norm(s + 'norm2', d + 'ln2')
        linear(s + 'mlp.fc1', d + 'ffn.layers.0.0', dim, mlp_dim)
        linear(s + 'mlp.fc2', d + 'ffn.layers.1', mlp_dim, dim)
    norm('norm', bb + 'ln1')

    head_info: Dict[str, Any] = {}
    if keep_head:
        head_in = dim
        if 'pre_logits.fc.weight' in src:
            head_in = src.peek('pre_logits.fc.weight', ndim=2).shape[0]
            linear('pre_logits.fc', HEAD_PREFIX + 'layers.pre_logits', dim,
                   head_in)
            head_info['hidden_dim'] = head_in
        num_classes = src.peek('head.weight', ndim=2).shape[0]
        linear('head', HEAD_PREFIX + 'layers.head', head_in, num_classes)
        head_info['num_classes'] = num_classes
    else:
        src.drop(_TIMM_HEAD_KEYS)
    src.check_consumed()

    arch = dict(
        embed_dims=int(dim),
        num_layers=depth,
        num_heads=None,  # not recoverable from the fused qkv weight
        feedforward_channels=int(mlp_dim),
        patch_size=int(patch_h),
        num_tokens=int(num_tokens))
    arch.update(head_info)
    return out, arch


def npz_to_mmpretrain(npz: Mapping[str, np.ndarray],
                      keep_head: bool = False,
                      *,
                      source: Optional[str] = None) -> StateDict:
    """Convert Google ViT ``.npz`` arrays to an MMPretrain state dict.

    Args:
        npz (Mapping[str, np.ndarray]): The arrays, e.g. ``np.load(path)``.
        keep_head (bool): Convert ``head/*`` and ``pre_logits/*`` to
            ``head.layers.{head,pre_logits}.*`` instead of dropping them.
            Defaults to False.
        source (str, optional): Names the source in error messages.

    Returns:
        OrderedDict[str, torch.Tensor]: Keys prefixed with ``backbone.``
        (and ``head.`` when the head is kept).

    Raises:
        KeyError: If an expected key is missing.
        ValueError: If a key has an unexpected shape or a source key is
            left unconsumed.
    """
    return _convert_npz(npz, keep_head, source or 'Google ViT npz')[0]


def timm_to_mmpretrain(state_dict: Mapping[str, torch.Tensor],
                       keep_head: bool = False,
                       *,
                       source: Optional[str] = None) -> StateDict:
    """Convert a timm ``VisionTransformer`` state dict to MMPretrain.

    Args:
        state_dict (Mapping[str, torch.Tensor]): The timm state dict.
        keep_head (bool): Convert ``head.*`` and ``pre_logits.fc.*`` to
            ``head.layers.{head,pre_logits}.*`` instead of dropping them.
            Defaults to False.
        source (str, optional): Names the source in error messages.

    Returns:
        OrderedDict[str, torch.Tensor]: Keys prefixed with ``backbone.``
        (and ``head.`` when the head is kept).

    Raises:
        KeyError: If an expected key is missing.
        ValueError: If a key has an unexpected shape or a source key is
            left unconsumed (e.g. ``fc_norm``, register tokens or layer
            scale, which MMPretrain's plain ViT does not have).
    """
    return _convert_timm(state_dict, keep_head, source or 'timm state dict')[0]


def _load_torch_state_dict(src: str) -> Mapping[str, torch.Tensor]:
    """Load a raw or wrapped (``state_dict``/``model``) torch state dict."""
    checkpoint = torch.load(src, map_location='cpu', weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f'{src} holds a {type(checkpoint).__name__}, not '
                         'a state dict.')
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def convert_file(src: str, dst: str, keep_head: bool = False) -> dict:
    """Convert a ViT checkpoint file to an MMPretrain checkpoint.

    Args:
        src (str): A Google ViT ``.npz`` file or a timm state dict saved
            with torch (``.pth``, ``.pt`` or ``.bin``; raw or under a
            ``state_dict`` or ``model`` key).
        dst (str): The output path.  It holds only ``meta`` and
            ``state_dict``, so it loads with ``weights_only=True``.
        keep_head (bool): Keep the classification head. Defaults to False.

    Returns:
        dict: A summary: ``src``, ``dst``, ``format``, ``num_tensors``,
        ``keep_head`` and the inferred architecture (``embed_dims``,
        ``num_layers``, ``num_heads`` (None for timm), ...).
    """
    suffix = osp.splitext(src)[1].lower()
    if suffix in NPZ_SUFFIXES:
        fmt = 'npz'
        with np.load(src) as npz:
            arrays = {key: npz[key] for key in npz.files}
        state_dict, arch = _convert_npz(arrays, keep_head,
                                        f'{src} (Google ViT npz)')
    elif suffix in TORCH_SUFFIXES:
        fmt = 'timm'
        state_dict, arch = _convert_timm(
            _load_torch_state_dict(src), keep_head, f'{src} (timm state dict)')
    else:
        raise ValueError(f'Unsupported checkpoint suffix {suffix!r} of '
                         f'{src}; expected one of '
                         f'{NPZ_SUFFIXES + TORCH_SUFFIXES}.')

    meta = dict(
        source=osp.abspath(src),
        format=fmt,
        keep_head=bool(keep_head),
        converter=__name__,
        arch=arch)
    dst_dir = osp.dirname(osp.abspath(dst))
    if not osp.isdir(dst_dir):
        raise FileNotFoundError(f'Output directory {dst_dir} does not exist.')
    torch.save(dict(meta=meta, state_dict=state_dict), dst)
    return dict(
        src=src,
        dst=dst,
        format=fmt,
        num_tensors=len(state_dict),
        keep_head=bool(keep_head),
        **arch)
