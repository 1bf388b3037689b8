"""Gradients of selected weight entries: sampled dense-dense products.

For a linear layer ``y = x W^T`` with output gradient ``g`` (T x out) and
input ``x`` (T x in), the gradient of the weight entry ``(r, c)`` is
``sum_t g[t, r] * x[t, c]``.  A sparse-value layer needs only its K selected
entries, so it never forms the dense ``g^T x`` (out x in): it samples the
product at the K ``(row, column)`` pairs (an SDDMM).  Every back-end
accumulates in fp32, whatever the dtype of ``g`` and ``x`` (bf16 / fp16
under autocast), and returns fp32.

Back-ends (docs/design/sparse_values.md §2):

- ``'torch'``: pure PyTorch, any device and dtype.  The selected pairs'
  gradient and input elements are gathered in cache-sized chunks (columns
  per block of tokens, or rows of the transposed operands when K is
  large), multiplied in fp32 and summed over tokens.
- ``'triton'``: a Triton kernel (:mod:`.sddmm_triton`) for CUDA tensors,
  chosen by ``'auto'`` where Triton imports and passes a self-check against
  ``'torch'`` on the device (once per device and process).
- ``'reference'``: the dense ``g^T x`` in fp32, then the selected entries;
  for tests.
"""
import logging
from typing import Dict, Tuple

import torch

#: Names accepted by :func:`resolve_backend` and :func:`sddmm`.
BACKENDS = ('auto', 'torch', 'triton', 'reference')
#: Elements gathered per operand and chunk by the ``'torch'`` back-end: 1 Mi
#: (4 MiB in fp32) when gathering rows of the transposed operands, 256 Ki
#: when gathering columns over a block of tokens.  Chunks that fit in the
#: cache measured 2-4x faster on the 2-core CPU than 16 MiB ones.
ROW_CHUNK_ELEMENTS = 2**20
COLUMN_CHUNK_ELEMENTS = 2**18

logger = logging.getLogger(__name__)
_TRITON_CHECKED: Dict[str, Tuple[bool, str]] = {}


def _check_operands(grad_out: torch.Tensor, inputs: torch.Tensor,
                    rows: torch.Tensor, cols: torch.Tensor) -> None:
    if grad_out.dim() != 2 or inputs.dim() != 2 or \
            grad_out.shape[0] != inputs.shape[0]:
        raise ValueError(
            'sddmm expects grad_out (T, out) and inputs (T, in) with the '
            f'same T, got {tuple(grad_out.shape)} and {tuple(inputs.shape)}')
    if rows.shape != cols.shape or rows.dim() != 1:
        raise ValueError(f'rows and cols must be 1-D of equal length, got '
                         f'{tuple(rows.shape)} and {tuple(cols.shape)}')


def sddmm_reference(grad_out: torch.Tensor, inputs: torch.Tensor,
                    rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The dense weight gradient in fp32, sampled at ``(rows, cols)``."""
    _check_operands(grad_out, inputs, rows, cols)
    dense = grad_out.float().t() @ inputs.float()
    return dense[rows.long(), cols.long()]


def _sampled_product(grad_out: torch.Tensor, inputs: torch.Tensor,
                     rows: torch.Tensor, cols: torch.Tensor,
                     kernel) -> torch.Tensor:
    """Shared frame of the gather back-ends: checks and empty cases.

    ``kernel(grad_out, inputs, rows, cols, out)`` fills ``out`` (K, fp32).
    """
    _check_operands(grad_out, inputs, rows, cols)
    out = torch.zeros(
        rows.numel(), dtype=torch.float32, device=grad_out.device)
    if rows.numel() and grad_out.shape[0]:
        kernel(grad_out, inputs, rows.long(), cols.long(), out)
    return out


def _row_kernel(grad_out: torch.Tensor, inputs: torch.Tensor,
                rows: torch.Tensor, cols: torch.Tensor,
                out: torch.Tensor) -> None:
    """Transpose once; gather selected rows of ``g^T`` and ``x^T``."""
    grad_t, inputs_t = grad_out.t().contiguous(), inputs.t().contiguous()
    step = max(1, ROW_CHUNK_ELEMENTS // grad_t.shape[1])
    for start in range(0, rows.numel(), step):
        stop = min(start + step, rows.numel())
        g = grad_t.index_select(0, rows[start:stop]).float()
        x = inputs_t.index_select(0, cols[start:stop]).float()
        out[start:stop] = (g * x).sum(1)


def _column_kernel(grad_out: torch.Tensor, inputs: torch.Tensor,
                   rows: torch.Tensor, cols: torch.Tensor,
                   out: torch.Tensor) -> None:
    """No transpose; per block of tokens gather the K selected columns."""
    step = max(1, COLUMN_CHUNK_ELEMENTS // rows.numel())
    for start in range(0, grad_out.shape[0], step):
        g = grad_out[start:start + step].index_select(1, rows).float()
        x = inputs[start:start + step].index_select(1, cols).float()
        out += (g * x).sum(0)


def sddmm_torch(grad_out: torch.Tensor, inputs: torch.Tensor,
                rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``sum_t grad_out[t, rows[k]] * inputs[t, cols[k]]`` in fp32.

    Two layouts, both gathering in cache-sized chunks, multiplying in fp32
    and summing over tokens.  With few pairs (K <= out + in, e.g. the proj
    and fc2 matrices of TR-PTS) the K columns are gathered per block of
    tokens, with no copy of the operands; with more, the operands are
    transposed once (O(T (out + in))) and the K rows gathered, which is
    cheaper per pair (docs/design/sparse_values.md §2).
    """
    num_features = grad_out.shape[-1] + inputs.shape[-1]
    kernel = _column_kernel if rows.numel() <= num_features else _row_kernel
    return _sampled_product(grad_out, inputs, rows, cols, kernel)


def sddmm_triton(grad_out: torch.Tensor, inputs: torch.Tensor,
                 rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The same product with the Triton kernel of :mod:`.sddmm_triton`."""
    from .sddmm_triton import triton_kernel

    def transposed(grad_out, inputs, rows, cols, out):
        triton_kernel(grad_out.t().contiguous(),
                      inputs.t().contiguous(), rows, cols, out)

    return _sampled_product(grad_out, inputs, rows, cols, transposed)


def _triton_status(device: torch.device) -> Tuple[bool, str]:
    """Whether the Triton back-end works on ``device`` (checked once)."""
    key = str(device)
    if key in _TRITON_CHECKED:
        return _TRITON_CHECKED[key]
    if device.type != 'cuda':
        status = (False, 'Triton back-end runs on CUDA tensors only')
    else:
        try:
            generator = torch.Generator(device=device).manual_seed(0)
            g = torch.randn(300, 40, device=device, generator=generator)
            x = torch.randn(300, 24, device=device, generator=generator)
            rows = torch.randint(
                0, 40, (77, ), device=device, generator=generator)
            cols = torch.randint(
                0, 24, (77, ), device=device, generator=generator)
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                got = sddmm_triton(g.to(dtype), x.to(dtype), rows, cols)
                want = sddmm_reference(g.to(dtype), x.to(dtype), rows, cols)
                if not torch.allclose(got, want, rtol=1e-3, atol=1e-3):
                    raise RuntimeError(
                        f'self-check failed in {dtype}: max error '
                        f'{(got - want).abs().max().item():.3g}')
            status = (True, 'Triton kernel, self-check passed')
        except Exception as error:  # import, compile or self-check failure
            status = (False, f'Triton back-end unavailable: {error!r}')
            logger.warning(
                'sparse values on %s: %s; using the torch '
                'back-end', key, status[1])
    _TRITON_CHECKED[key] = status
    return status


def resolve_backend(backend: str, device: torch.device) -> str:
    """The back-end that ``backend`` means on ``device``.

    ``'auto'`` is ``'triton'`` on CUDA where Triton imports and its kernel
    passes a self-check against the fp32 reference (bf16, fp16, fp32),
    otherwise ``'torch'``.  An explicit ``'triton'`` that cannot run
    raises instead of falling back.
    """
    if backend not in BACKENDS:
        raise ValueError(f'unknown sparse-value back-end {backend!r}; '
                         f'expected one of {BACKENDS}')
    device = torch.device(device)
    if backend == 'auto':
        return 'triton' if _triton_status(device)[0] else 'torch'
    if backend == 'triton':
        ok, why = _triton_status(device)
        if not ok:
            raise RuntimeError(f"backend='triton' cannot run on {device}: "
                               f'{why}')
    return backend


def sddmm(grad_out: torch.Tensor,
          inputs: torch.Tensor,
          rows: torch.Tensor,
          cols: torch.Tensor,
          backend: str = 'torch') -> torch.Tensor:
    """Sample ``grad_out^T inputs`` at ``(rows, cols)`` with ``backend``.

    Args:
        grad_out (Tensor): Output gradient, ``(T, out)``.
        inputs (Tensor): Layer input, ``(T, in)``.
        rows (Tensor): Row (output feature) of each selected entry, ``(K,)``.
        cols (Tensor): Column (input feature) of each entry, ``(K,)``.
        backend (str): ``'torch'``, ``'triton'`` or ``'reference'``
            (resolved: see :func:`resolve_backend`).

    Returns:
        Tensor: ``(K,)`` fp32 gradients of the selected entries.
    """
    if backend == 'torch':
        return sddmm_torch(grad_out, inputs, rows, cols)
    if backend == 'triton':
        return sddmm_triton(grad_out, inputs, rows, cols)
    if backend == 'reference':
        return sddmm_reference(grad_out, inputs, rows, cols)
    raise ValueError(f'unresolved sparse-value back-end {backend!r}; '
                     f"expected 'torch', 'triton' or 'reference'")
