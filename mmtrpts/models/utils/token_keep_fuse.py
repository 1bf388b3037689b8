"""[CLS]-attention token keep/fuse (pure torch).

The mechanism of EViT (Liang et al., ICLR 2022) as used by TR-PTS (ICCV
2025) and Sparse-Tuning (arXiv 2405.14700), written from docs/methods/trpts.md
§6: in a selection block, after the attention residual, each candidate token i
is scored by the [CLS] row of that block's attention averaged over heads,

    a_i = mean_h softmax(q_cls . K^T / sqrt(d))_i ,

the top ``k`` candidates are kept (in ascending original order) and the
others are fused into one token appended last,

    x_fused = sum_i a_i x_i / (sum_i a_i + 1e-6)   ('norm', TR-PTS)
    x_fused = sum_i a_i x_i                        ('sum', EViT/Sparse-Tuning)

or dropped ('drop').  [CLS] and other extra tokens (a distillation token)
are never candidates.  Each token carries a weight -- how many original
patches it stands for -- so the mean over the original patches can still be
formed after reduction.
"""
import math
from fractions import Fraction
from typing import NamedTuple, Optional

import torch
from torch import Tensor

FUSE_MODES = ('norm', 'sum', 'drop')
ROUNDINGS = ('floor', 'ceil')
_EPS = 1e-6


class KeepFuseResult(NamedTuple):
    """Output of :func:`keep_fuse`.

    Attributes:
        x (Tensor): ``[B, num_extra + k (+ 1), C]`` tokens.
        weights (Tensor): ``[B, num_extra + k (+ 1)]`` patches per token
            (0 for extra tokens).
        kept (Tensor): ``[B, k]`` indices of the kept candidates (into the
            input's candidate tokens, ascending).
        assignment (Tensor, optional): ``[B, P]`` for each original patch
            the index of the output token that now holds it (-1: dropped).
    """
    x: Tensor
    weights: Tensor
    kept: Tensor
    assignment: Optional[Tensor]


def cls_attention(q_cls: Tensor, k: Tensor, scale: float) -> Tensor:
    """Head-averaged [CLS] attention row over all keys.

    Args:
        q_cls (Tensor): ``[B, H, 1, d]`` the [CLS] query of every head.
        k (Tensor): ``[B, H, N, d]`` keys of all tokens.
        scale (float): The attention scale, ``d ** -0.5``.

    Returns:
        Tensor: ``[B, N]`` -- exactly the [CLS] row of the block's
        post-softmax attention, averaged over heads (about B*H*N*d MACs;
        the full attention stays in scaled_dot_product_attention).
    """
    logits = (q_cls * scale) @ k.transpose(-2, -1)  # [B, H, 1, N]
    return logits.softmax(dim=-1).mean(dim=1).squeeze(1)


def num_kept(num_candidates: int, keep_rate: float,
             rounding: str = 'floor') -> int:
    """How many of ``num_candidates`` tokens a block keeps.

    ``floor`` is TR-PTS's rule; EViT and Sparse-Tuning use ``ceil``.  The
    product is formed in exact decimal arithmetic of ``keep_rate``'s repr,
    so e.g. 0.7 * 140 keeps exactly 98.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f'rounding must be one of {ROUNDINGS}, got '
                         f'{rounding!r}')
    if not 0 < keep_rate <= 1:
        raise ValueError(f'keep_rate must be in (0, 1], got {keep_rate}')
    num_candidates = int(num_candidates)  # a tensor under jit tracing
    exact = Fraction(repr(float(keep_rate))) * num_candidates
    count = math.floor(exact) if rounding == 'floor' else math.ceil(exact)
    return max(1, min(num_candidates, count))


def keep_fuse(x: Tensor, scores: Tensor, num_extra: int, num_keep: int,
              fuse: str = 'norm', weights: Optional[Tensor] = None,
              assignment: Optional[Tensor] = None) -> KeepFuseResult:
    """Keep the top-``num_keep`` candidates of ``x`` and fuse the rest.

    Args:
        x (Tensor): ``[B, num_extra + N, C]``; the first ``num_extra``
            tokens ([CLS], ...) are kept untouched.
        scores (Tensor): ``[B, N]`` candidate scores (the [CLS] attention).
            Gradients flow through them into the fused token unless the
            caller detaches them.
        num_extra (int): Number of leading extra tokens.
        num_keep (int): Candidates to keep (``1 <= num_keep <= N``).
        fuse (str): ``'norm'``, ``'sum'`` or ``'drop'``.
        weights (Tensor, optional): ``[B, num_extra + N]`` patches per
            token; defaults to 0 for extra tokens and 1 for candidates.
        assignment (Tensor, optional): ``[B, P]`` token index of each
            original patch, updated for the output if given.

    Returns:
        KeepFuseResult: The reduced tokens and bookkeeping.
    """
    if fuse not in FUSE_MODES:
        raise ValueError(f'fuse must be one of {FUSE_MODES}, got {fuse!r}')
    batch, total, channels = x.shape
    num_candidates = total - num_extra
    if scores.shape != (batch, num_candidates):
        raise ValueError(f'scores must have shape {(batch, num_candidates)}, '
                         f'got {tuple(scores.shape)}')
    if not 1 <= num_keep <= num_candidates:
        raise ValueError(f'num_keep must be in [1, {num_candidates}], got '
                         f'{num_keep}')
    if weights is None:
        weights = x.new_ones(batch, total)
        weights[:, :num_extra] = 0
    extra, candidates = x[:, :num_extra], x[:, num_extra:]
    cand_weights = weights[:, num_extra:]

    order = scores.argsort(dim=1, descending=True, stable=True)
    kept = order[:, :num_keep].sort(dim=1).values
    rest = order[:, num_keep:]
    gather = (lambda t, idx: t.gather(1, idx.unsqueeze(-1).expand(
        -1, -1, t.shape[-1])))
    parts = [extra, gather(candidates, kept)]
    new_weights = [weights[:, :num_extra], cand_weights.gather(1, kept)]
    if fuse != 'drop' and rest.shape[1] > 0:
        rest_scores = scores.gather(1, rest).unsqueeze(-1)  # [B, R, 1]
        fused = (gather(candidates, rest) * rest_scores).sum(1, keepdim=True)
        if fuse == 'norm':
            fused = fused / (rest_scores.sum(1, keepdim=True) + _EPS)
        parts.append(fused)
        new_weights.append(cand_weights.gather(1, rest).sum(1, keepdim=True))
    out_x = torch.cat(parts, dim=1)
    out_weights = torch.cat(new_weights, dim=1)

    new_assignment = None
    if assignment is not None:
        # remap[old candidate] -> new token index (-1 when dropped)
        fused_index = num_extra + num_keep if len(parts) == 3 else -1
        remap = torch.full((batch, num_candidates), fused_index,
                           dtype=torch.long, device=x.device)
        remap.scatter_(
            1, kept,
            torch.arange(num_extra, num_extra + num_keep,
                         device=x.device).expand(batch, -1))
        valid = assignment >= num_extra
        lookup = (assignment - num_extra).clamp(min=0)
        new_assignment = torch.where(valid, remap.gather(1, lookup),
                                     torch.full_like(assignment, -1))
    return KeepFuseResult(out_x, out_weights, kept, new_assignment)
