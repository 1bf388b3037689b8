"""The Triton kernel of :func:`~mmtrpts.models.utils.sddmm.sddmm_triton`.

One program computes ``BLOCK_K`` selected entries: it walks the tokens in
tiles of ``BLOCK_T``, loads the tile of each entry's output-gradient row and
input column, and accumulates their products in fp32.  The operands are
passed transposed (``out x T``, ``in x T``, contiguous), so a tile's loads
are contiguous along tokens.  Importing this module needs Triton;
:mod:`~mmtrpts.models.utils.sddmm` imports it only when the Triton back-end
is used (``'auto'`` tries it on CUDA tensors only).  With ``TRITON_INTERPRET=1`` the kernel also runs on CPU
tensors (the tests check it that way).
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _sddmm_kernel(grad_t_ptr, inputs_t_ptr, rows_ptr, cols_ptr, out_ptr,
                  num_tokens, num_pairs, grad_stride, inputs_stride,
                  BLOCK_K: tl.constexpr, BLOCK_T: tl.constexpr):
    pair = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    pair_ok = pair < num_pairs
    rows = tl.load(rows_ptr + pair, mask=pair_ok, other=0).to(tl.int64)
    cols = tl.load(cols_ptr + pair, mask=pair_ok, other=0).to(tl.int64)
    grad_rows = grad_t_ptr + rows[:, None] * grad_stride
    input_rows = inputs_t_ptr + cols[:, None] * inputs_stride
    total = tl.zeros((BLOCK_K, ), dtype=tl.float32)
    for start in range(0, num_tokens, BLOCK_T):
        token = start + tl.arange(0, BLOCK_T)
        ok = pair_ok[:, None] & (token < num_tokens)[None, :]
        g = tl.load(grad_rows + token[None, :], mask=ok, other=0.)
        x = tl.load(input_rows + token[None, :], mask=ok, other=0.)
        total += tl.sum(g.to(tl.float32) * x.to(tl.float32), axis=1)
    tl.store(out_ptr + pair, total, mask=pair_ok)


def triton_kernel(grad_t: torch.Tensor,
                  inputs_t: torch.Tensor,
                  rows: torch.Tensor,
                  cols: torch.Tensor,
                  out: torch.Tensor,
                  block_k: int = 32,
                  block_t: int = 128) -> None:
    """Fill ``out`` (K, fp32) with ``sum_t grad_t[rows[k], t] *
    inputs_t[cols[k], t]``.

    Args:
        grad_t (Tensor): ``(out, T)``, contiguous, any float dtype.
        inputs_t (Tensor): ``(in, T)``, contiguous, any float dtype.
        rows (Tensor): ``(K,)`` output-feature indices.
        cols (Tensor): ``(K,)`` input-feature indices.
        out (Tensor): ``(K,)`` fp32 result.
        block_k (int): Entries per program.
        block_t (int): Tokens per tile.
    """
    num_pairs = rows.numel()
    grid = (triton.cdiv(num_pairs, block_k), )
    _sddmm_kernel[grid](
        grad_t,
        inputs_t,
        rows.contiguous(),
        cols.contiguous(),
        out,
        grad_t.shape[1],
        num_pairs,
        grad_t.stride(0),
        inputs_t.stride(0),
        BLOCK_K=block_k,
        BLOCK_T=block_t)
