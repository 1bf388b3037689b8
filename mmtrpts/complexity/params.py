"""Trainable-parameter accounting."""
from typing import Dict

import torch


def count_parameters(model: torch.nn.Module) -> Dict[str, int]:
    """Count parameters by ``requires_grad``, with and without the head.

    Returns:
        dict: ``total``, ``trainable``, ``head`` (all head parameters) and
        ``backbone_total`` (everything outside ``head``).
    """
    total = trainable = head = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
        if name.startswith('head.'):
            head += param.numel()
    return dict(total=total, trainable=trainable, head=head,
                backbone_total=total - head)
