"""The training form of an armed selection (docs/design/sparse_values.md).

Once a masked optimizer wrapper is armed, :func:`apply_training_form` puts
the model into the form it trains in: every selected ``Linear`` weight and
patch-embedding convolution becomes a sparse-value layer (the wrapper then
holds the layer's values instead of a leaf), other selected tensors stay on
the masked path, and every tensor that trains nothing stops requiring
gradients.  ``FisherSelectionHook`` calls it in ``before_train`` (and then
re-wraps DDP); the efficiency report calls it to build the same form
outside a runner.
"""
from typing import Dict, Iterable, List, NamedTuple, Tuple

import torch.nn as nn

from ..models.utils.sparse_values import (MASKED_PATH, NOTHING_SELECTED,
                                          SPARSE_VALUE, to_sparse_values)
from ..selection.eligibility import FROZEN, MASKED


def gradient_elements(model: nn.Module) -> int:
    """Entries that still compute gradients (what DDP all-reduces)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class TrainingForm(NamedTuple):
    """What :func:`apply_training_form` did.

    Attributes:
        layers (dict): Weight name -> its sparse-value layer.
        paths (dict): Masking candidate -> its path: ``'sparse-value
            (<back-end>)'``, ``'masked'`` or ``'nothing selected'``.
        switched_off (list): ``(name, parameter)`` pairs whose
            ``requires_grad`` was switched off here.
    """
    layers: Dict[str, nn.Module]
    paths: Dict[str, str]
    switched_off: List[Tuple[str, nn.Parameter]]

    def summary(self, model: nn.Module) -> str:
        """One line: how many tensors take which path."""
        trained = sum(p.requires_grad for p in model.parameters())
        off = self.switched_off
        masked = sum(v == MASKED_PATH for v in self.paths.values())
        return (f'Training form: {len(self.layers)} sparse-value layers, '
                f'{masked} tensors on the masked path, {len(off)} more '
                f'tensors off ({sum(p.numel() for _, p in off):,} entries: '
                'frozen by the eligibility rules or nothing selected); '
                f'{trained} tensors ({gradient_elements(model):,} entries) '
                'compute gradients')

    def path_table(self, model: nn.Module, indices: dict) -> str:
        """One line per candidate tensor: shape, selected entries, path."""
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        width = max((len(n) for n in self.paths), default=6)
        lines = [f'{"tensor":<{width}}  {"shape":<16} {"selected":>9}  path']
        for name, path in self.paths.items():
            count = indices[name].numel() if name in indices else 0
            lines.append(f'{name:<{width}}  {str(shapes[name]):<16} '
                         f'{count:>9,}  {path}')
        return 'Training path of every candidate tensor:\n' + '\n'.join(lines)


def apply_training_form(
    model: nn.Module,
    wrapper,
    sparse_values: bool = True,
    backend: str = 'auto',
    ema_models: Iterable[nn.Module] = ()) -> TrainingForm:
    """Sparse values where possible; switch off what trains nothing.

    Args:
        model (nn.Module): The unwrapped model the wrapper was built for.
        wrapper: An armed masked optimizer wrapper (``roles`` set by
            ``FisherMaskOptimWrapperConstructor``).
        sparse_values (bool): Convert Linear-like selected weights; False
            keeps every selected tensor on the masked path.
        backend (str): Back-end of the value gradients.
        ema_models (iterable): Averaged copies of ``model`` (``EMAHook``)
            to convert alike, so that their parameters and buffers pair
            with the model's by name and position.

    Returns:
        TrainingForm: The converted layers, every candidate's path, and
        the tensors switched off.
    """
    if not wrapper.armed:
        raise RuntimeError('apply_training_form needs an armed wrapper')
    indices = wrapper.selection['indices']
    roles = wrapper.roles
    layers = {}
    if sparse_values:
        layers = to_sparse_values(model, indices, backend)
        wrapper.use_sparse_values(layers)
        for ema in ema_models:
            to_sparse_values(ema, indices, backend)
    params = dict(model.named_parameters())
    paths = {}
    for name, role in roles.items():
        if role != MASKED or name not in params:
            continue
        if name in layers:
            paths[name] = f'{SPARSE_VALUE} ({layers[name].backend})'
        elif indices.get(name) is None or not indices[name].numel():
            paths[name] = NOTHING_SELECTED
        else:
            paths[name] = MASKED_PATH
    off = [(n, p) for n, p in params.items() if p.requires_grad and (
        roles.get(n) == FROZEN or paths.get(n) == NOTHING_SELECTED)]
    for _, param in off:
        param.requires_grad_(False)
        param.grad = None
    return TrainingForm(layers, paths, off)
