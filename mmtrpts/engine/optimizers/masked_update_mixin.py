"""Exact masked updates for any torch optimizer
(docs/design/masked_optimizer.md).

Until it is *armed*, a masked wrapper is an ordinary ``OptimWrapper`` /
``AmpOptimWrapper``.  Arming with a selection (per parameter, the flat
indices of the entries that may change) rebuilds the inner optimizer over
flat leaf tensors that hold only the selected entries; fully trained
tensors (biases, head) stay as they are.  Every ``step()`` then

1. *gathers*: refreshes each leaf from its parameter and sets the leaf's
   gradient to the dense gradient at the selected indices;
2. runs the normal ``step()`` -- AMP unscaling, gradient clipping and the
   inner optimizer all act on the leaves only;
3. *scatters* the leaves back into the parameters through ``view(-1)``.

Unselected entries are therefore never touched by weight decay, momentum or
Adam moments: they stay bit-identical to their pretrained values for every
optimizer, and optimizer state is O(number of selected entries).  The
logged ``grad_norm`` is the norm over the selected entries and fully
trained tensors.

On this *masked path* dense gradients are still computed (and all-reduced
by DDP).  :meth:`MaskedUpdateMixin.use_sparse_values` moves the tensors
whose layers took the sparse-value form
(:mod:`mmtrpts.models.utils.sparse_values`) off it: the optimizer then holds
each layer's ``weight_values`` parameter in place of the leaf (same
position, same optimizer state), autograd produces the K value gradients
directly, and after every step the values are written into the dense
weight (docs/design/sparse_values.md).
"""
import inspect
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.logging import print_log

_SELECTION_KEY = 'masked_selection'


def _rebuild_optimizer(optimizer: torch.optim.Optimizer,
                       groups: List[dict]) -> torch.optim.Optimizer:
    """Same optimizer class and settings over new parameter groups.

    Only keyword arguments the constructor accepts are passed (torch 2.13's
    AdamW rejects its own ``defaults`` such as ``decoupled_weight_decay``);
    every group keeps all of its keys (current ``lr``, ``initial_lr``, ...),
    so parameter schedulers continue exactly where they were.
    """
    accepted = inspect.signature(type(optimizer).__init__).parameters
    kwargs = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    new = type(optimizer)(groups, **kwargs)
    for group, old in zip(new.param_groups, groups):
        group.update({k: v for k, v in old.items() if k != 'params'})
    return new


def optimizer_state_numel(optimizer: torch.optim.Optimizer) -> int:
    """Elements held in an optimizer's state (non-scalar tensors, e.g.
    AdamW's ``exp_avg`` and ``exp_avg_sq``; its 0-dim ``step`` not
    counted)."""
    return sum(
        value.numel() for state in optimizer.state.values()
        for value in state.values() if torch.is_tensor(value)
        and value.dim() > 0)


class MaskedUpdateMixin:
    """Mixin placed before ``OptimWrapper`` or ``AmpOptimWrapper`` in the MRO.

    The Fisher selection hook calls :meth:`bind_param_names` in
    ``before_run`` and :meth:`arm` in ``before_train``.
    """

    def _init_masked_state(self) -> None:
        self._param_names: Dict[int, str] = {}
        self._entries: List[Tuple[torch.Tensor, torch.Tensor,
                                  torch.Tensor]] = []
        self.selection: Optional[dict] = None
        self._sparse_layers: Dict[str, torch.nn.Module] = {}

    # -- names -------------------------------------------------------------
    def bind_param_names(self, model: torch.nn.Module) -> None:
        """Remember the name of every parameter of the (unwrapped) model."""
        self._param_names = {id(p): n for n, p in model.named_parameters()}

    def param_names(self) -> List[str]:
        """Names of the tensors the (unarmed) optimizer updates."""
        if not self._param_names:
            raise RuntimeError(
                f'{type(self).__name__} has no parameter names: add '
                "dict(type='FisherSelectionHook') to custom_hooks")
        return [
            self._param_names[id(p)] for group in self.optimizer.param_groups
            for p in group['params']
        ]

    @property
    def armed(self) -> bool:
        return self.selection is not None

    # -- arming --------------------------------------------------------------
    def arm(self, selection: dict) -> None:
        """Restrict updates to the selected entries.

        Args:
            selection (dict): A selection record with ``indices`` (name ->
                1-D integer tensor of flat indices into ``param.view(-1)``)
                and ``full`` (names of tensors trained densely).  Tensors of
                the optimizer in neither are frozen from now on.
        """
        if self.armed:
            raise RuntimeError('the optimizer wrapper is already armed')
        indices = selection['indices']
        full = set(selection['full'])
        names_in_optimizer = set(self.param_names())
        missing = (set(indices) | full) - names_in_optimizer
        if missing:
            raise KeyError(
                f'the selection names {sorted(missing)[:5]} which the '
                'optimizer does not hold (frozen by requires_grad or the '
                'eligibility rules?)')
        entries, groups = [], []
        for group in self.optimizer.param_groups:
            params = []
            for param in group['params']:
                name = self._param_names[id(param)]
                if name in full:
                    params.append(param)
                    continue
                idx = indices.get(name)
                if idx is None:  # frozen from now on: keep group shape
                    idx = torch.zeros(0, dtype=torch.long)
                if not param.is_contiguous():
                    raise ValueError(f'{name} is not contiguous; masked '
                                     'updates write through view(-1)')
                idx = idx.to(device=param.device, dtype=torch.long)
                if idx.numel() and (int(idx.min()) < 0
                                    or int(idx.max()) >= param.numel()):
                    raise IndexError(
                        f'selection indices of {name} out of range for '
                        f'shape {tuple(param.shape)}')
                leaf = param.detach().view(-1)[idx].clone()
                leaf.requires_grad_(True)
                entries.append((param, leaf, idx))
                params.append(leaf)
            groups.append(dict(group, params=params))
        self.optimizer = _rebuild_optimizer(self.optimizer, groups)
        self._entries = entries
        self.selection = selection

    def use_sparse_values(self, layers: Dict[str, torch.nn.Module]) -> None:
        """Train the given tensors through their layers' sparse values.

        For each armed tensor whose layer now has the sparse-value form,
        the layer's ``weight_values`` replaces the tensor's leaf in its
        parameter group, at the same position, and takes over the leaf's
        optimizer state (restored on resume): the update is the same, only
        the gradient now comes from autograd instead of a gather.

        Args:
            layers (dict): Parameter name (the dense weight) -> its
                sparse-value layer, as returned by
                :func:`~mmtrpts.models.utils.sparse_values.to_sparse_values`.
        """
        if not self.armed:
            raise RuntimeError('arm the wrapper before use_sparse_values')
        replaced, kept = {}, []
        for param, leaf, idx in self._entries:
            name = self._param_names.get(id(param))
            layer = layers.get(name)
            if layer is None:
                kept.append((param, leaf, idx))
                continue
            values = layer.weight_values
            if values.shape != leaf.shape or not torch.equal(
                    layer.weight_index.to(idx.device), idx):
                raise ValueError(
                    f'the sparse-value layer of {name} holds other entries '
                    'than the armed selection')
            with torch.no_grad():
                values.copy_(leaf.to(values.dtype))
            replaced[id(leaf)] = values
            self._sparse_layers[name] = layer
        missing = set(layers) - set(self._sparse_layers)
        if missing:
            raise KeyError(f'no armed tensor for the sparse-value layers of '
                           f'{sorted(missing)[:5]}')
        for group in self.optimizer.param_groups:
            new_params = []
            for param in group['params']:
                values = replaced.get(id(param))
                if values is not None:
                    state = self.optimizer.state.pop(param, None)
                    if state is not None:
                        self.optimizer.state[values] = state
                    param = values
                new_params.append(param)
            group['params'] = new_params
        self._entries = kept

    # -- update ---------------------------------------------------------------
    def _check_sparse_gradients(self) -> None:
        for name, layer in self._sparse_layers.items():
            if layer.weight_values.grad is None:
                raise RuntimeError(
                    f'{name} took the sparse-value form but its values got '
                    'no gradient: something computes with the weight '
                    'without calling the layer (e.g. a parent module reading '
                    '.weight); train it on the masked path instead '
                    '(FisherSelectionHook(sparse_values=False))')

    def _gather(self) -> None:
        for param, leaf, idx in self._entries:
            with torch.no_grad():
                leaf.copy_(param.view(-1)[idx])
            grad = param.grad
            leaf.grad = None if grad is None else \
                grad.reshape(-1)[idx].to(leaf.dtype)

    def _scatter(self) -> None:
        with torch.no_grad():
            for param, leaf, idx in self._entries:
                param.view(-1)[idx] = leaf.to(param.dtype)

    def step(self, **kwargs) -> None:
        if not self.armed:
            return super().step(**kwargs)
        self._check_sparse_gradients()
        self._gather()
        super().step(**kwargs)
        self._scatter()
        for layer in self._sparse_layers.values():
            layer.sync_weight()

    def zero_grad(self, **kwargs) -> None:
        super().zero_grad(**kwargs)
        for param, _, _ in self._entries:
            param.grad = None

    # -- accounting --------------------------------------------------------
    def num_updated(self) -> int:
        """Entries the optimizer updates (selected + fully trained)."""
        return sum(p.numel() for group in self.optimizer.param_groups
                   for p in group['params'])

    def state_numel(self) -> int:
        """Number of elements held in the inner optimizer's state."""
        return optimizer_state_numel(self.optimizer)

    # -- persistence ---------------------------------------------------------
    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.armed:
            state[_SELECTION_KEY] = self.selection
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)  # mmengine pops keys from it
        selection = state_dict.pop(_SELECTION_KEY, None)
        if selection is None and self.armed:
            raise RuntimeError(
                'the checkpoint holds a dense optimizer state but this '
                'masked optimizer wrapper is armed with a selection; a '
                'dense state cannot be loaded onto the selected entries')
        if selection is not None:
            if not self.armed:
                self.arm(selection)
                print_log(
                    'Re-armed the masked optimizer with the selection '
                    f'stored in the checkpoint ({self.num_updated():,} '
                    'updated entries)', logger='current')
            elif selection.get('checksum') != self.selection.get('checksum'):
                raise RuntimeError(
                    'the checkpoint\'s selection differs from the armed one '
                    f'(checksum {selection.get("checksum")} vs '
                    f'{self.selection.get("checksum")})')
        super().load_state_dict(state_dict)

