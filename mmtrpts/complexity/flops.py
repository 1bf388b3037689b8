"""FLOPs with attention counted.

mmengine's counter (one multiply-add = one FLOP) has no handle for
``aten::scaled_dot_product_attention``, which MMPretrain's ViT attention
calls, so it reports ViT-B/16 at 16.867 G instead of 17.582 G (the metafile
value).  :func:`sdpa_flop_jit` counts the two attention matmuls,
``B * H * Nq * Nk * (d + dv)``.  Add, GELU and softmax are not counted
(mmengine's convention); layer norm is counted.
"""
from typing import Any, List, Optional, Sequence

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOP handle of ``aten::scaled_dot_product_attention``.

    q, k, v have shapes ``[..., Nq, d]``, ``[..., Nk, d]``, ``[..., Nk, dv]``;
    the leading dimensions (batch, heads) multiply.
    """
    q_shape, k_shape, v_shape = (get_shape(x) for x in inputs[:3])
    batch = 1
    for size in q_shape[:-2]:
        batch *= size
    nq, d = q_shape[-2:]
    nk, dv = k_shape[-2], v_shape[-1]
    return batch * nq * nk * (d + dv)


class _TensorForward(torch.nn.Module):
    """Expose ``model(x, mode='tensor')`` (or a backbone) as ``f(x)``."""

    def __init__(self, model: torch.nn.Module, backbone_only: bool):
        super().__init__()
        self.model = model
        self.backbone_only = backbone_only

    def forward(self, x):
        if self.backbone_only:
            return self.model.backbone(x)
        return self.model(x, mode='tensor')


def build_flop_analyzer(model: torch.nn.Module, inputs: torch.Tensor,
                        backbone_only: bool = False) -> FlopAnalyzer:
    """mmengine's FlopAnalyzer with the SDPA handle, warnings silenced."""
    analyzer = FlopAnalyzer(_TensorForward(model, backbone_only),
                            (inputs, ))
    analyzer.set_op_handle('aten::scaled_dot_product_attention',
                           sdpa_flop_jit)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


def count_flops(model: torch.nn.Module,
                input_shape: Sequence[int] = (3, 224, 224),
                backbone_only: bool = False,
                inputs: Optional[torch.Tensor] = None) -> int:
    """FLOPs (multiply-adds) of one image, attention matmuls included.

    Args:
        model (nn.Module): An mmpretrain classifier (``mode='tensor'``).
        input_shape (Sequence[int]): ``(C, H, W)`` of one image.
        backbone_only (bool): Count ``model.backbone`` only, as mmpretrain's
            ``get_flops.py`` does.
        inputs (Tensor, optional): A batch to trace instead of zeros; the
            result is divided by its batch size.

    Returns:
        int: FLOPs per image.

    The model is traced in ``eval()`` mode without autograd, as inference
    runs (a sparse-value layer then runs as its plain dense layer, which the
    tracer counts).
    """
    if inputs is None:
        inputs = torch.zeros(1, *input_shape)
    param = next(model.parameters(), None)
    if param is not None:
        inputs = inputs.to(param.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            total = build_flop_analyzer(model, inputs, backbone_only).total()
    finally:
        model.train(was_training)
    return total // inputs.shape[0]
