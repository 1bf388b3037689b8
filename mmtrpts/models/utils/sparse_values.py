"""Sparse-value layers: train selected weight entries without dense gradients.

After a parameter selection, each selected ``nn.Linear`` weight (and a
patch-embedding convolution, a Linear over non-overlapping patches) is
trained through ``weight_values``, a 1-D parameter holding the *current
values* of its K selected entries (absolute values, so weight decay acts on
them exactly as on a dense weight).  The dense ``weight`` stays a parameter
without gradient and remains the source of truth of the forward pass: the
values are written into it whenever they changed (their version counter
moved: after an optimizer step, a ``load_state_dict``, ...).  The forward is
the ordinary dense layer; the backward computes the input gradient as
usual and the K value gradients as a sampled product (:mod:`.sddmm`), never
a dense weight gradient (docs/design/sparse_values.md).

The selected flat indices are a non-persistent buffer ``weight_index``
(with their rows and columns beside it);
``state_dict()`` holds exactly the keys of the dense layer (``weight`` with
the values written in, ``bias``), and ``load_state_dict()`` of such a dict
refreshes the values from the loaded weight, so checkpoints, ``load_from``,
delta export and inference are unchanged.

Example:
    >>> layers = to_sparse_values(model, record['indices'])
    >>> layers['backbone.layers.0.attn.qkv.weight'].weight_values.shape
    torch.Size([2304])
"""
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .sddmm import resolve_backend, sddmm

_VALUES, _INDEX = 'weight_values', 'weight_index'
#: Save only the selected input columns for the value gradients when they
#: are at most this share of the input features (e.g. fc2 of TR-PTS).
SAVE_COLUMNS_BELOW = 0.75


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a linear layer in, else the tensor's."""
    device_type = tensor.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return tensor.dtype


class _LinearOp:
    """How a Linear layer maps to token rows (``(..., in) -> (..., out)``)."""

    @staticmethod
    def forward(inputs, weight, bias):
        return F.linear(inputs, weight, bias)

    @staticmethod
    def input_grad(input_shape, weight, grad_out):
        return grad_out @ weight

    @staticmethod
    def output_rows(grad_out):
        return grad_out.reshape(-1, grad_out.shape[-1])

    @staticmethod
    def input_rows(inputs, weight_shape):
        return inputs.reshape(-1, inputs.shape[-1])


class _PatchConvOp:
    """A stride = kernel ``conv2d``: a Linear over non-overlapping patches."""

    @staticmethod
    def forward(inputs, weight, bias):
        return F.conv2d(inputs, weight, bias, stride=weight.shape[-2:])

    @staticmethod
    def input_grad(input_shape, weight, grad_out):
        return torch.nn.grad.conv2d_input(
            input_shape, weight, grad_out, stride=weight.shape[-2:])

    @staticmethod
    def output_rows(grad_out):
        # (B, out, H', W') -> (B * H' * W', out): one row per patch.
        return grad_out.permute(0, 2, 3, 1).reshape(-1, grad_out.shape[1])

    @staticmethod
    def input_rows(inputs, weight_shape):
        # (B, C*kh*kw, L) in the (C, kh, kw) order of weight.view(out, -1)
        kernel = weight_shape[-2:]
        patches = F.unfold(inputs, kernel, stride=kernel)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])


class _SparseValueFunction(torch.autograd.Function):
    """A dense layer whose weight gradient exists only at selected pairs.

    ``values`` is an input only so that autograd routes its gradient: the
    weight already holds the values.  ``op`` is :class:`_LinearOp` or
    :class:`_PatchConvOp`.  Under autocast the layer runs in the autocast
    dtype (as the dense layer would) and saves its operands in it; value
    and bias gradients are accumulated in fp32.  With ``saved_columns``
    only those input columns are saved for the value gradients (``cols``
    then index into them) instead of the whole input.
    """

    @staticmethod
    def forward(ctx, inputs, weight, bias, values, rows, cols, saved_columns,
                backend, op):
        dtype = _compute_dtype(inputs)
        inputs_c = inputs.to(dtype)
        weight_c = weight.to(dtype)
        bias_c = None if bias is None else bias.to(dtype)
        with torch.autocast(inputs.device.type, enabled=False):
            out = op.forward(inputs_c, weight_c, bias_c)
        needs_input, _, _, needs_values = ctx.needs_input_grad[:4]
        saved = None
        if needs_values:
            saved = inputs_c if saved_columns is None else op.input_rows(
                inputs_c, weight.shape).index_select(1, saved_columns)
        ctx.save_for_backward(saved, weight_c if needs_input else None, rows,
                              cols)
        ctx.compact = saved_columns is not None
        ctx.op, ctx.backend = op, backend
        ctx.input_shape, ctx.input_dtype = inputs.shape, inputs.dtype
        ctx.weight_shape = weight.shape
        ctx.values_dtype = values.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        saved, weight_c, rows, cols = ctx.saved_tensors
        needs_input, _, needs_bias, needs_values = ctx.needs_input_grad[:4]
        op = ctx.op
        grad_input = grad_bias = grad_values = None
        grad_rows = op.output_rows(grad_out)
        if needs_input:
            grad_input = op.input_grad(ctx.input_shape, weight_c,
                                       grad_out.to(weight_c.dtype)).to(
                                           ctx.input_dtype)
        if needs_bias:
            grad_bias = grad_rows.float().sum(0).to(ctx.bias_dtype)
        if needs_values:
            input_rows = saved if ctx.compact else op.input_rows(
                saved, ctx.weight_shape)
            grad_values = sddmm(grad_rows, input_rows, rows, cols,
                                ctx.backend).to(ctx.values_dtype)
        return (grad_input, None, grad_bias, grad_values, None, None, None,
                None, None)


def _state_dict_post_hook(module, state_dict, prefix, local_metadata):
    """Dense keys only: the values are written into ``weight`` first."""
    module.sync_weight()
    state_dict.pop(prefix + _VALUES, None)


def _load_state_dict_pre_hook(module, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
    """A dense state dict sets the values from its ``weight``."""
    weight = state_dict.get(prefix + 'weight')
    if prefix + _VALUES not in state_dict and torch.is_tensor(weight) and \
            weight.shape == module.weight.shape:
        index = module.weight_index.to(weight.device)
        state_dict[prefix + _VALUES] = weight.reshape(-1)[index]


class SparseValueMixin:
    """What a sparse-value layer adds to its dense class (see module doc)."""

    _op = None

    def _init_sparse_values(self, flat_index: torch.Tensor,
                            backend: str) -> None:
        weight = self.weight
        if not weight.is_contiguous():
            raise ValueError('a sparse-value weight must be contiguous (its '
                             'values are written through view(-1))')
        flat_index = flat_index.to(device=weight.device, dtype=torch.long)
        if flat_index.dim() != 1 or flat_index.numel() == 0:
            raise ValueError('a sparse-value layer needs a non-empty 1-D '
                             f'index, got shape {tuple(flat_index.shape)}')
        if int(flat_index.min()) < 0 or \
                int(flat_index.max()) >= weight.numel():
            raise IndexError(f'selected indices out of range for a weight of '
                             f'shape {tuple(weight.shape)}')
        if torch.unique(flat_index).numel() != flat_index.numel():
            raise ValueError('selected indices must be unique')
        self.backend = resolve_backend(backend, weight.device)
        self.register_buffer(_INDEX, flat_index, persistent=False)
        columns = weight[0].numel()
        cols = flat_index % columns
        self.register_buffer(
            'weight_rows',
            torch.div(flat_index, columns, rounding_mode='floor'),
            persistent=False)
        # The value gradients read only the selected columns of the input:
        # save just those when that saves a quarter of the input or more.
        used, compact = torch.unique(cols, return_inverse=True)
        self.compact_input = used.numel() <= SAVE_COLUMNS_BELOW * columns
        self.register_buffer(
            'weight_cols',
            compact if self.compact_input else cols,
            persistent=False)
        self.register_buffer(
            'saved_columns',
            used if self.compact_input else None,
            persistent=False)
        values = weight.detach().view(-1)[flat_index].clone()
        self.weight_values = nn.Parameter(
            values, requires_grad=weight.requires_grad)
        weight.requires_grad_(False)
        weight.grad = None
        self._synced_version = self.weight_values._version
        self.register_state_dict_post_hook(_state_dict_post_hook)
        self.register_load_state_dict_pre_hook(_load_state_dict_pre_hook)

    @torch.no_grad()
    def sync_weight(self) -> bool:
        """Write the values into the dense weight if they changed.

        Returns:
            bool: Whether anything was written.
        """
        version = self.weight_values._version
        if version == self._synced_version:
            return False
        self.weight.view(-1).index_copy_(
            0, self.weight_index, self.weight_values.to(self.weight.dtype))
        self._synced_version = self.weight_values._version
        return True

    def _sparse_forward(self, inputs: torch.Tensor, dense_forward):
        self.sync_weight()
        if self.weight.requires_grad:
            raise RuntimeError(
                'the dense weight of a sparse-value layer must not require '
                'gradients; train weight_values instead')
        if not (torch.is_grad_enabled() and self.weight_values.requires_grad):
            return dense_forward(inputs)
        return _SparseValueFunction.apply(inputs, self.weight, self.bias,
                                          self.weight_values, self.weight_rows,
                                          self.weight_cols, self.saved_columns,
                                          self.backend, self._op)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, '
                f'selected={self.weight_values.numel()}, '
                f'backend={self.backend}')


class SparseValueLinear(SparseValueMixin, nn.Linear):
    """An ``nn.Linear`` trained through the values of selected entries.

    It takes over the ``weight`` and ``bias`` parameter objects of the
    layer it converts; ``isinstance(layer, nn.Linear)`` still holds.

    Args:
        linear (nn.Linear): The layer to convert.
        flat_index (Tensor): Flat indices into ``weight.view(-1)`` of the
            selected entries (unique, any order: ``weight_values[k]`` is
            the entry ``flat_index[k]``).
        backend (str): ``'auto'``, ``'torch'``, ``'triton'`` or
            ``'reference'`` (see :func:`.sddmm.resolve_backend`).
    """
    _op = _LinearOp

    def __init__(self,
                 linear: nn.Linear,
                 flat_index: torch.Tensor,
                 backend: str = 'auto'):
        nn.Module.__init__(self)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.train(linear.training)
        self._init_sparse_values(flat_index, backend)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._sparse_forward(
            inputs, lambda x: F.linear(x, self.weight, self.bias))


def is_patch_conv(module: nn.Module) -> bool:
    """A ``Conv2d`` over non-overlapping patches: a Linear over patches."""
    return (type(module) is nn.Conv2d and module.groups == 1
            and tuple(module.stride) == tuple(module.kernel_size)
            and tuple(module.dilation) == (1, 1)
            and module.padding in ((0, 0), 'valid')
            and module.padding_mode == 'zeros')


class SparseValuePatchConv2d(SparseValueMixin, nn.Conv2d):
    """A patch-embedding ``Conv2d`` (stride = kernel) with sparse values.

    Args:
        conv (nn.Conv2d): The layer to convert (:func:`is_patch_conv`).
        flat_index (Tensor): See :class:`SparseValueLinear`.
        backend (str): See :class:`SparseValueLinear`.
    """
    _op = _PatchConvOp

    def __init__(self,
                 conv: nn.Conv2d,
                 flat_index: torch.Tensor,
                 backend: str = 'auto'):
        if not is_patch_conv(conv):
            raise ValueError(f'not a patch convolution: {conv}')
        nn.Module.__init__(self)
        for attr in ('in_channels', 'out_channels', 'kernel_size', 'stride',
                     'padding', 'dilation', 'transposed', 'output_padding',
                     'groups', 'padding_mode',
                     '_reversed_padding_repeated_twice'):
            setattr(self, attr, getattr(conv, attr))
        self.weight = conv.weight
        self.bias = conv.bias
        self.train(conv.training)
        self._init_sparse_values(flat_index, backend)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._sparse_forward(inputs, super().forward)


#: Path labels used in logs and reports.
SPARSE_VALUE, MASKED_PATH, NOTHING_SELECTED = ('sparse-value', 'masked',
                                               'nothing selected')


#: Linear classes whose forward is exactly ``F.linear(x, weight, bias)``
#: (mmcv's only special-cases empty inputs).  A subclass with its own
#: forward (a LoRA-style layer, SPT's ``SPTLinear``, the output projection
#: of ``nn.MultiheadAttention``, whose parent reads the weight directly)
#: would lose that behaviour if converted: it stays on the masked path.
PLAIN_LINEAR_CLASSES = ('torch.nn.modules.linear.Linear',
                        'mmcv.cnn.bricks.wrappers.Linear')


def _qualified_name(cls: type) -> str:
    return f'{cls.__module__}.{cls.__qualname__}'


def sparse_value_path(module: nn.Module, param_name: str) -> str:
    """Which training path a selected tensor can take.

    Args:
        module (nn.Module): The module that owns the tensor.
        param_name (str): Its name in ``module``.

    Returns:
        str: ``'sparse-value'`` for the ``weight`` of a plain Linear
        (:data:`PLAIN_LINEAR_CLASSES`) or of a patch convolution, else
        ``'masked'`` (the masked optimizer's dense gradient, gather and
        scatter).
    """
    if param_name != 'weight':
        return MASKED_PATH
    if _qualified_name(type(module)) in PLAIN_LINEAR_CLASSES or \
            is_patch_conv(module):
        return SPARSE_VALUE
    return MASKED_PATH


def to_sparse_values(model: nn.Module,
                     indices: Dict[str, torch.Tensor],
                     backend: str = 'auto') -> Dict[str, nn.Module]:
    """Convert the layers of the selected weights that can take the form.

    Args:
        model (nn.Module): The (unwrapped) model; converted in place.
        indices (dict): Parameter name -> flat indices of its selected
            entries (a selection record's ``indices``).
        backend (str): Back-end of the value gradients.

    Returns:
        dict: Parameter name -> converted layer, for every name whose layer
        is a plain Linear or patch convolution (:func:`sparse_value_path`)
        and has at least one
        selected entry.  Other names are left as they are.
    """
    converted = {}
    for name, index in indices.items():
        module_name, _, param_name = name.rpartition('.')
        module = model.get_submodule(module_name)
        parent_name, _, child = module_name.rpartition('.')
        parent = model.get_submodule(parent_name)
        if isinstance(module, SparseValueMixin) and param_name == 'weight':
            raise RuntimeError(f'{module_name} is already a sparse-value '
                               'layer')
        if index.numel() == 0 or \
                sparse_value_path(module, param_name) != SPARSE_VALUE:
            continue
        layer_type = (
            SparseValueLinear
            if isinstance(module, nn.Linear) else SparseValuePatchConv2d)
        layer = layer_type(module, index, backend)
        setattr(parent, child, layer)
        converted[name] = layer
    return converted


def sparse_value_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """Weight name -> sparse-value layer, for every one in ``model``."""
    return {
        f'{name}.weight': module
        for name, module in model.named_modules()
        if isinstance(module, SparseValueMixin)
    }
