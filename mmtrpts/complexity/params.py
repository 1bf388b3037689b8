"""Trainable-parameter accounting."""
from typing import Dict, Set

import torch


def _sparse_value_names(model: torch.nn.Module) -> Set[str]:
    """Names of the ``weight_values`` of sparse-value layers.

    Those values are entries of the layer's dense ``weight`` (docs/design/
    sparse_values.md §1): they are trainable, but counting them in the
    total as well would count those entries twice.
    """
    return {
        f'{name}.weight_values' if name else 'weight_values'
        for name, module in model.named_modules()
        if hasattr(module, 'weight_index') and hasattr(module,
                                                       'weight_values')
    }


def count_parameters(model: torch.nn.Module) -> Dict[str, int]:
    """Count parameters by ``requires_grad``, with and without the head.

    The values of a sparse-value layer count as trainable, not again in
    the total (its dense ``weight`` already holds them).

    Returns:
        dict: ``total``, ``trainable``, ``head`` (all head parameters) and
        ``backbone_total`` (everything outside ``head``).
    """
    total = trainable = head = 0
    values = _sparse_value_names(model)
    for name, param in model.named_parameters():
        if param.requires_grad:
            trainable += param.numel()
        if name in values:
            continue
        total += param.numel()
        if name.startswith('head.'):
            head += param.numel()
    return dict(total=total, trainable=trainable, head=head,
                backbone_total=total - head)
