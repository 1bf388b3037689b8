"""MMPretrain ViT with SPT's structured and unstructured tuning."""
import copy
import os.path as osp
from collections import defaultdict
from typing import Dict, Set

import torch
import torch.nn as nn
from mmpretrain.models import VisionTransformer
from mmpretrain.registry import MODELS

from ...selection.spt_allocation import (is_scored, trainable_indices,
                                         validate_allocation)
from ..peft.branch_init import check_branch_init
from ..peft.spt_modules import CHECKSUM_BUFFER, SPTAdapter, SPTLinear, \
    SPTLoRA
from .method_state import MethodStateMixin

#: ``SPTViT`` arguments that ``VisionTransformer`` does not take.
SPT_ARGS = ('sensitivity_file', 'structured_type', 'rank', 'module_dropout',
            'module_drop_path', 'module_dropout_mask', 'branch_init')
#: Values of ``SPTViT(module_dropout_mask=...)``.
DROPOUT_MASKS = ('per_branch', 'shared')
_PROJ = 'attn.proj.weight'


def plain_vit_cfg(backbone_cfg: dict) -> dict:
    """The ``VisionTransformer`` config an ``SPTViT`` config extends (the
    model the sensitivity pass scores)."""
    cfg = copy.deepcopy(dict(backbone_cfg))
    if cfg.get('type') not in ('SPTViT', SPTViT):
        raise ValueError(f"expected a backbone config with type='SPTViT', "
                         f'got type={cfg.get("type")!r}')
    for key in SPT_ARGS:
        cfg.pop(key, None)
    cfg['type'] = 'VisionTransformer'
    return cfg


def load_allocation(path: str) -> dict:
    """Read and validate an allocation written by
    ``tools/compute_sensitivity.py``."""
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'SPT allocation {path} does not exist; create it with '
            '`python tools/compute_sensitivity.py CONFIG` (or '
            'mmtrpts.apis.compute_sensitivity) before building the model')
    allocation = torch.load(path, map_location='cpu', weights_only=True)
    validate_allocation(allocation, source=path)
    return allocation


@MODELS.register_module()
class SPTViT(MethodStateMixin, VisionTransformer):
    """``VisionTransformer`` tuned the SPT way (He et al., ICCV 2023).

    The allocation file (``tools/compute_sensitivity.py``: a sensitivity
    pass over the training split and SPT's budget rule, docs/methods/spt.md
    §1) is read **at construction**, so the trainable structure is fixed
    before the runner builds the optimizer and wraps the model in DDP:

    - every *structured* matrix (or fused-qkv slice) gets a LoRA (parallel,
      mergeable) or an Adapter (sequential; parallel on attn.proj) of rank
      ``rank`` (:mod:`mmtrpts.models.peft.spt_modules`);
    - the [CLS] token, the fully tuned vectors and every tensor holding
      *unstructured* entries keep ``requires_grad=True``; everything else
      is frozen.  ``SPTOptimWrapperConstructor`` arms MMTRPTS's masked
      optimizer wrapper with :attr:`masked_indices`, so only the selected
      entries of partially trained tensors ever change (exactly, whatever
      the optimizer; docs/methods/spt.md §5.1: no K x K backward).
      Unstructured LN entries are trained the same way (docs/methods/spt.md
      §5.2: the reference code counts them but never trains them).

    Checkpoints keep the full weights plus the buffer ``spt_checksum``;
    loading one trained with another allocation raises.  The same
    allocation file is needed to build the model for testing.

    **Parity with the reference code** (docs/methods/spt.md §2.1).  The
    class defaults keep this project's original behaviour (the embedded
    demo's numbers were made with it); the benchmark model base
    ``configs/_base_/models/spt-lora_vit-b16_in21k.py`` selects the
    reference with ``branch_init='reference'`` and
    ``module_dropout_mask='shared'``.  The branches on ``attn.proj`` (LoRA
    and Adapter) never have an input dropout, as in the reference.

    Example:
        >>> backbone = dict(
        ...     type='SPTViT', arch='b', img_size=224, patch_size=16,
        ...     drop_path_rate=0.1, structured_type='lora', rank=8,
        ...     module_dropout=0.1, module_drop_path=0.1,
        ...     # the state the reference trains from (docs/methods/spt.md
        ...     # §2.1): trunc-normal(0.02) branches, one q/k/v dropout mask
        ...     branch_init='reference', module_dropout_mask='shared',
        ...     sensitivity_file='data/sensitivity/spt-lora_cifar100_0.4M.pth',
        ...     init_cfg=dict(type='Pretrained', prefix='backbone.',
        ...                   checkpoint='data/checkpoints/vit-b16_in21k.pth'))

    Args:
        sensitivity_file (str): The allocation file.
        structured_type (str): ``'lora'`` or ``'adapter'``; must match the
            file (the thresholds depend on it, docs/methods/spt.md §5.3).
        rank (int): Rank of the structured modules; must match the file.
            Defaults to 8.
        module_dropout (float): Input dropout of the structured modules
            (the LoRA or Adapter on attn.proj has none, docs/methods/spt.md
            §2). Defaults to 0.1.
        module_drop_path (float): Output drop-path of the structured
            modules. Defaults to 0.1.
        module_dropout_mask (str): ``'per_branch'`` (default): every branch
            draws its own input-dropout mask; ``'shared'`` (the reference):
            the parallel (LoRA) branches of one layer -- the q, k and v
            LoRAs of the fused qkv -- see one dropped copy of the layer
            input.  Sequential Adapters read their own output rows, so both
            modes are the same for them.
        branch_init (str): ``'zero'`` (default): Kaiming-uniform down- and
            zero up-projections, step 0 is the pre-trained model;
            ``'reference'``: every branch projection trunc-normal(0.02)
            with zero bias (:mod:`mmtrpts.models.peft.branch_init`).
            Applied in :meth:`init_weights` after the pre-trained
            checkpoint is loaded, to the branches only.
        *args, **kwargs: ``VisionTransformer`` arguments.
    """

    def __init__(self, *args, sensitivity_file: str,
                 structured_type: str = 'lora', rank: int = 8,
                 module_dropout: float = 0.1, module_drop_path: float = 0.1,
                 module_dropout_mask: str = 'per_branch',
                 branch_init: str = 'zero', **kwargs):
        if module_dropout_mask not in DROPOUT_MASKS:
            raise ValueError(f'module_dropout_mask must be one of '
                             f'{DROPOUT_MASKS}, got {module_dropout_mask!r}')
        check_branch_init(branch_init)
        super().__init__(*args, **kwargs)
        allocation = load_allocation(sensitivity_file)
        self._check_allocation(allocation, sensitivity_file,
                               structured_type, rank)
        self.sensitivity_file = sensitivity_file
        self.structured_type = structured_type
        self.module_dropout_mask = module_dropout_mask
        self.branch_init = branch_init
        self.spt_counts = dict(allocation['counts'])
        self._add_structured(allocation, rank, module_dropout,
                             module_drop_path)
        self.masked_indices = self._freeze(allocation)
        self.register_buffer(
            CHECKSUM_BUFFER,
            torch.tensor(int(allocation['checksum'][:15], 16)))
        self._register_load_state_dict_pre_hook(self._check_checksum)

    # -- construction --------------------------------------------------------
    def _check_allocation(self, allocation: dict, path: str,
                          structured_type: str, rank: int) -> None:
        settings = allocation['settings']
        for key, value in (('structured_type', structured_type),
                           ('rank', rank)):
            if settings[key] != value:
                raise ValueError(
                    f'{path}: settings.{key} is {settings[key]!r} but the '
                    f'backbone has {key}={value!r}; recompute the '
                    f'allocation for {key}={value!r}')
        shapes = {n: list(p.shape) for n, p in self.named_parameters()
                  if is_scored(n)}
        expected = allocation['shapes']
        wrong = [f'{n}: {shapes.get(n)} vs {expected.get(n)}'
                 for n in sorted(set(shapes) | set(expected))
                 if shapes.get(n) != expected.get(n)]
        if wrong:
            raise ValueError(
                f'{path}: the allocation was made for other scored tensors '
                f'than this backbone has (backbone vs file: {wrong[:3]}); '
                'recompute it for this architecture')

    def _add_structured(self, allocation: dict, rank: int, dropout: float,
                        drop_path: float) -> None:
        labels = defaultdict(list)
        for name in allocation['structured']:
            unit = allocation['units'][name]
            labels[unit['param']].append(unit['label'])
        for param, slices in labels.items():
            module_name, _, local = param.rpartition('.')
            linear = self.get_submodule(module_name)
            if local != 'weight' or not isinstance(linear, nn.Linear):
                raise TypeError(f'{param} is not the weight of an nn.Linear; '
                                'SPT structures nn.Linear weights only')
            is_proj = param.endswith(_PROJ)
            parallel = self.structured_type == 'lora' or is_proj
            # The reference feeds the proj branch (LoRA or Adapter) its
            # input without dropout; with a shared mask, a parallel layer
            # drops its input once for all its branches.
            layer_dropout = 0. if is_proj else dropout
            shared = parallel and self.module_dropout_mask == 'shared'
            layer = SPTLinear(
                linear, self.structured_type, parallel=parallel,
                shared_dropout=layer_dropout if shared else 0.)
            for label in slices:
                layer.add_branch(
                    label, rank, dropout=0. if shared else layer_dropout,
                    drop_path=drop_path, branch_init=self.branch_init)
            parent, _, child = module_name.rpartition('.')
            setattr(self.get_submodule(parent), child, layer)

    def _freeze(self, allocation: dict) -> Dict[str, torch.Tensor]:
        """Fix ``requires_grad``; return the partially trained tensors."""
        in_place = trainable_indices(allocation)
        params = dict(self.named_parameters())
        for name, param in params.items():
            param.requires_grad_(
                name == 'cls_token' or '.spt_' in name or name in in_place)
        return {
            name: idx for name, idx in in_place.items()
            if idx.numel() < params[name].numel()
        }

    method_state_desc = 'the SPT branches and the allocation checksum'

    def method_state_keys(self) -> Set[str]:
        return {
            key
            for key in self.state_dict()
            if '.spt_' in key or key == CHECKSUM_BUFFER
        }

    def init_weights(self) -> None:
        """Initialise, load ``init_cfg``'s checkpoint, then the branches.

        ``VisionTransformer``'s layers re-initialise every ``nn.Linear`` of
        their FFN (the fc1/fc2 Adapter branches included) and MMEngine
        loads a ``Pretrained`` checkpoint last, so the branches'
        ``branch_init`` is applied after both.  It touches the branch
        parameters only -- never the (loaded) ``weight``/``bias`` of the
        layers they extend -- and skips every branch that the checkpoint
        held (an ``init_cfg`` pointing at a trained SPT checkpoint).
        """
        loaded: Set[str] = set()

        def record(state_dict, prefix, *args, **kwargs) -> None:
            loaded.update(key[len(prefix):] for key in state_dict
                          if key.startswith(prefix))

        handle = self._register_load_state_dict_pre_hook(record)
        try:
            super().init_weights()
        finally:
            handle.remove()
        for name, module in self.named_modules():
            if isinstance(module, (SPTLoRA, SPTAdapter)) and not any(
                    key.startswith(f'{name}.') for key in loaded):
                module.reset_parameters()

    def _check_checksum(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + CHECKSUM_BUFFER
        if key in state_dict and not torch.equal(
                state_dict[key].cpu(), getattr(self, CHECKSUM_BUFFER).cpu()):
            raise ValueError(
                f'{key}: the checkpoint was trained with another SPT '
                f'allocation than {self.sensitivity_file}; build the model '
                'with the allocation file of that run')
