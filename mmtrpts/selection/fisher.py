"""Diagonal empirical Fisher information (pure torch).

``F(theta) ~ E[(dL/dtheta)^2]`` with the cross-entropy loss on true labels
(TR-PTS, ICCV 2025; docs/methods/trpts.md §2).  The statistic is per batch:
for each batch the gradient of the *batch-mean* loss is squared and summed,
then the sum is divided by the number of batches -- the statistic SPT (ICCV
2023) also uses.  Gradients come from :func:`torch.autograd.grad`, never
``.backward()``: the parameters' ``.grad`` and DDP's reducer stay untouched.

Each parameter's squared gradient is added to its sum by a tensor hook the
moment autograd produces the gradient; the hook hands autograd back a
zero-stride zero tensor, so the dense gradients are never all held at once
(peak: the sums plus one gradient, not the sums plus every gradient).
"""
from functools import partial
from typing import Dict

import torch


class FisherAccumulator:
    """Accumulate squared batch gradients for a set of parameters.

    Args:
        params (dict): name -> parameter to score.

    Example:
        >>> acc = FisherAccumulator(dict(w=model.fc.weight))
        >>> for x, y in batches:
        ...     acc.accumulate(F.cross_entropy(model(x), y))
        >>> scores = acc.scores()  # divided by the number of batches
    """

    def __init__(self, params: Dict[str, torch.Tensor]):
        if not params:
            raise ValueError('FisherAccumulator needs at least one parameter')
        self.params = dict(params)
        self.sums = {
            name: torch.zeros_like(p, dtype=torch.float32)
            for name, p in self.params.items()
        }
        self.num_batches = 0

    def accumulate(self, loss: torch.Tensor) -> None:
        """Add the squared gradient of ``loss`` (a scalar batch mean)."""
        if loss.dim() != 0:
            raise ValueError(f'expected a scalar loss, got shape '
                             f'{tuple(loss.shape)}')
        handles = [
            param.register_hook(partial(self._add_square, self.sums[name]))
            for name, param in self.params.items()
        ]
        try:
            torch.autograd.grad(loss.float(), list(self.params.values()),
                                allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
        self.num_batches += 1

    @staticmethod
    def _add_square(total: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Add ``grad**2`` to ``total``; give autograd a free zero back."""
        grad_fp32 = grad.float()
        total.addcmul_(grad_fp32, grad_fp32)
        return grad.new_zeros(()).expand_as(grad)

    def scores(self) -> Dict[str, torch.Tensor]:
        """The accumulated sums divided by the number of batches."""
        if self.num_batches == 0:
            raise RuntimeError('no batch was accumulated')
        return {n: s / self.num_batches for n, s in self.sums.items()}
