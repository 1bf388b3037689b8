"""Gradients of selected weight entries: sampled dense-dense products.

For a linear layer ``y = x W^T`` with output gradient ``g`` (T x out) and
input ``x`` (T x in), the gradient of the weight entry ``(r, c)`` is
``sum_t g[t, r] * x[t, c]``.  A sparse-value layer needs only its K selected
entries, so it never forms the dense ``g^T x`` (out x in): it samples the
product at the K ``(row, column)`` pairs (an SDDMM).  Every back-end
accumulates in fp32, whatever the dtype of ``g`` and ``x`` (bf16 / fp16
under autocast), and returns fp32.

Back-ends (docs/design/sparse_values.md §2):

- ``'torch'``: pure PyTorch, any device and dtype.  Selected rows of
  ``g^T`` and columns of ``x^T`` are gathered in chunks of at most
  ``CHUNK_ELEMENTS`` elements, multiplied and summed over tokens.
- ``'triton'``: a Triton kernel (:mod:`.sddmm_triton`) for CUDA tensors,
  chosen by ``'auto'`` where Triton imports and passes a self-check against
  ``'torch'`` on the device (once per device and process).
- ``'reference'``: the dense ``g^T x`` in fp32, then the selected entries;
  for tests.
"""
import logging
from functools import partial
from typing import Dict, Tuple

import torch

#: Names accepted by :func:`resolve_backend` and :func:`sddmm`.
BACKENDS = ('auto', 'torch', 'triton', 'reference')
#: Elements of one gathered chunk of the ``'torch'`` back-end (per operand):
#: 4 Mi elements, 16 MiB in fp32.
CHUNK_ELEMENTS = 4 * 2**20

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
    """Shared frame of the gather back-ends: checks, empty cases, layout.

    ``kernel(grad_t, inputs_t, rows, cols, out)`` fills ``out`` (K, fp32)
    from the transposed operands (``out x T`` and ``in x T``, contiguous,
    so that a selected row is contiguous along tokens).
    """
    _check_operands(grad_out, inputs, rows, cols)
    out = torch.zeros(rows.numel(), dtype=torch.float32,
                      device=grad_out.device)
    if rows.numel() and grad_out.shape[0]:
        kernel(grad_out.t().contiguous(), inputs.t().contiguous(),
               rows.long(), cols.long(), out)
    return out


def _gather_kernel(grad_t: torch.Tensor, inputs_t: torch.Tensor,
                   rows: torch.Tensor, cols: torch.Tensor, out: torch.Tensor,
                   chunk_elements: int = CHUNK_ELEMENTS) -> None:
    step = max(1, chunk_elements // grad_t.shape[1])
    for start in range(0, rows.numel(), step):
        stop = min(start + step, rows.numel())
        g = grad_t.index_select(0, rows[start:stop]).float()
        x = inputs_t.index_select(0, cols[start:stop]).float()
        out[start:stop] = (g * x).sum(1)


def sddmm_torch(grad_out: torch.Tensor, inputs: torch.Tensor,
                rows: torch.Tensor, cols: torch.Tensor,
                chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """``sum_t grad_out[t, rows[k]] * inputs[t, cols[k]]`` in fp32.

    The operands are transposed once, then chunks of the K pairs are
    gathered (selected rows of ``grad_out^T`` and ``inputs^T``), multiplied
    in fp32 and summed over tokens; a chunk holds at most
    ``chunk_elements`` elements per operand.
    """
    return _sampled_product(
        grad_out, inputs, rows, cols,
        partial(_gather_kernel, chunk_elements=chunk_elements))


def sddmm_triton(grad_out: torch.Tensor, inputs: torch.Tensor,
                 rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The same product with the Triton kernel of :mod:`.sddmm_triton`."""
    from .sddmm_triton import triton_kernel
    return _sampled_product(grad_out, inputs, rows, cols, triton_kernel)


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
            rows = torch.randint(0, 40, (77, ), device=device,
                                 generator=generator)
            cols = torch.randint(0, 24, (77, ), device=device,
                                 generator=generator)
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
            logger.warning('sparse values on %s: %s; using the torch '
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


def sddmm(grad_out: torch.Tensor, inputs: torch.Tensor, rows: torch.Tensor,
          cols: torch.Tensor, backend: str = 'torch') -> torch.Tensor:
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
