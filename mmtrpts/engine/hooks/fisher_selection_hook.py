"""Run the Fisher pass before training and arm the masked optimizer."""
import copy
import os.path as osp
from typing import Optional

from mmengine.dist import all_gather_object
from mmengine.hooks import EMAHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS
from mmpretrain.utils import get_ori_model

from ...complexity.params import count_parameters
from ...models.utils.sddmm import BACKENDS
from ...selection.placement import block_densities, choose_blocks
from ...selection.record import validate_record
from ...selection.report import format_layer_table
from ..optimizers.masked_update_mixin import MaskedUpdateMixin
from ...checkpoints.io import load_checkpoint_file
from ..training_form import apply_training_form, gradient_elements
from ..parameter_selection import (VIT_BLOCK_PATTERN, ParameterSelection,
                                   base_checkpoint, check_base_checkpoint,
                                   save_selection)


#: Arguments of the hook itself; every other one configures the selection.
HOOK_ARGS = ('selection_file', 'token_placement', 'save_plot',
             'sparse_values', 'sparse_backend')
_NOT_RESUMED = object()
#: Why a backbone type without ``check_token_selection`` cannot take
#: [CLS]-attention token selection (docs/methods/trpts.md §12).
_NO_TOKEN_SELECTION = {
    'SwinTransformer': 'it has no [CLS] token (windowed attention over a '
    'patch grid that patch merging halves per stage)',
    'SwinTransformerV2': 'it has no [CLS] token (windowed attention over a '
    'patch grid that patch merging halves per stage)',
    'ConvNeXt': 'it has no [CLS] token and no attention (a convolutional '
    'network over a fixed grid)',
    'ViTEVA02': 'its rotary position embedding (RoPE) rotates every patch '
    'token by its grid position, which a reduced or fused token no longer '
    'has; token keep/fuse is not implemented for EVA-02',
    'VisionTransformer': "token selection lives in the drop-in subclass: "
    "set type='TokenKeepFuseViT' (same arguments)",
}


def check_token_placement(backbone) -> None:
    """Refuse ``token_placement`` on a backbone that cannot select tokens.

    Args:
        backbone (nn.Module, optional): The model's backbone.

    Raises:
        ValueError: Naming the backbone type (or the TokenKeepFuseViT
            option) and what token selection needs.
    """
    check = getattr(backbone, 'check_token_selection', None)
    if check is not None:
        check('FisherSelectionHook(token_placement=...)')
        return
    name = type(backbone).__name__
    why = _NO_TOKEN_SELECTION.get(
        name, 'it has no [CLS]-attention token selection')
    raise ValueError(
        f'FisherSelectionHook(token_placement=...) places [CLS]-attention '
        f'token selection, which needs a TokenKeepFuseViT backbone with a '
        f'[CLS] token; the backbone is {name}: {why}. Remove '
        'token_placement from the hook (parameter selection alone works on '
        'this backbone; docs/methods/trpts.md §12)')


@HOOKS.register_module()
class FisherSelectionHook(Hook):
    """TR-PTS parameter selection: Fisher pass, selection rule, arming.

    In ``before_train`` -- after pretrained weights are loaded and a resume
    is done, before the first iteration -- the hook scores every masking
    candidate (see ``FisherMaskOptimWrapperConstructor``) with the diagonal
    empirical Fisher over the run's training split, applies the selection
    rule and arms the masked optimizer wrapper, which from then on updates
    only the selected entries.  On resume the wrapper is re-armed from the
    checkpoint and the pass is skipped; ``selection_file`` skips it too.
    Under DDP every rank scores its shard, sums are all-reduced, and the
    ranks' selections are compared (a mismatch raises).

    Once armed, the model takes its training form
    (docs/design/sparse_values.md): every selected ``Linear`` weight and the
    patch-embedding convolution become sparse-value layers (a parameter of
    the K selected values; no dense weight gradient is computed), other
    selected tensors stay on the masked path (dense gradient, gather,
    scatter), and tensors that train nothing -- frozen by the eligibility
    rules, converted dense weights, candidates with no selected entry --
    stop requiring gradients.  Under DDP the model is then wrapped again,
    so gradient communication is O(trained entries).  An ``EMAHook``'s
    averaged copy takes the same form.  The log lists the path of every
    candidate tensor.

    Example:
        >>> optim_wrapper = dict(
        ...     constructor='FisherMaskOptimWrapperConstructor',
        ...     optimizer=dict(type='Adam', lr=1e-3, weight_decay=0.))
        >>> custom_hooks = [
        ...     dict(type='FisherSelectionHook', target_ratio=0.0034)]

    The selection itself -- Fisher pass, rule, budget -- is
    :class:`~mmtrpts.engine.ParameterSelection`, which this hook builds
    from its keyword arguments (and checks them, before the run starts);
    ``tools/compute_fisher.py`` runs the same object offline.  With no
    argument the hook selects by the TR-PTS rule at the paper's VTAB-1k
    budget, 0.34% of the backbone (``target_ratio=0.0034``).

    Args:
        selection_file (str, optional): A record written by
            ``tools/compute_fisher.py``; skips the pass.
        token_placement (dict, optional): Parameter-token co-selection for
            a ``TokenKeepFuseViT`` backbone: ``dict(mode='sparse',
            num_blocks=3)`` puts token selection into the blocks with the
            lowest selected-parameter density; modes ``'sparse'``,
            ``'dense'``, ``'random'`` (``seed``), ``'explicit'``
            (``blocks``).  The choice is stored in the backbone's
            ``keep_layer_mask`` buffer, so checkpoints carry it.  The Fisher
            pass always runs with token selection off.  A backbone without
            [CLS]-attention token selection (Swin, ConvNeXt, EVA-02, a
            plain ``VisionTransformer``, a ``TokenKeepFuseViT`` with
            ``with_cls_token=False`` or ``out_type='featmap'``) is refused
            with a ValueError in ``before_run``, before any pass
            (docs/methods/trpts.md §12).
        save_plot (bool): Write ``selection_density.png``. Defaults to True.
        sparse_values (bool): Train Linear-like selected weights through
            sparse values (default); False keeps every selected tensor on
            the masked path (dense gradients, as before the sparse-value
            form existed).
        sparse_backend (str): Back-end of the value gradients: ``'auto'``
            (Triton on CUDA where it works, else pure PyTorch),
            ``'torch'``, ``'triton'`` or ``'reference'`` (dense gradient,
            then gather; for tests).
        **selection: Settings of :class:`~mmtrpts.engine.ParameterSelection`
            and its rule: ``rule`` (``'trpts'``, ``'gps'``,
            ``'global_topk'``), the rule's options (``target_ratio``,
            ``m_percent``, ``c_min``, ``c_max``, ``weight``, ``rounding``,
            ``granularity``, ``tolerance``; ``k``; ``num`` / ``fraction``;
            ``budget_denominator``) and the pass's (``batch_size``,
            ``pipeline``, ``max_samples``, ``max_batches``, ``head``,
            ``probe_epochs``, ``probe_lr``, ``progress``).
    """
    # After EMAHook.before_train, which may copy EMA weights into the model.
    priority = 'BELOW_NORMAL'

    def __init__(self, selection_file: Optional[str] = None,
                 token_placement: Optional[dict] = None,
                 save_plot: bool = True, sparse_values: bool = True,
                 sparse_backend: str = 'auto', **selection):
        if sparse_backend not in BACKENDS:
            raise ValueError(f'FisherSelectionHook: sparse_backend must be '
                             f'one of {BACKENDS}, got {sparse_backend!r}')
        self.selection = ParameterSelection(**selection)
        self.sparse_values = bool(sparse_values)
        self.sparse_backend = sparse_backend
        self.selection_file = selection_file
        self.token_placement = dict(token_placement or {})
        self.save_plot = save_plot
        # What a resumed checkpoint held: its selection record (None when
        # it had none), or _NOT_RESUMED.
        self._resumed_selection = _NOT_RESUMED

    # -- runner hooks ------------------------------------------------------
    def before_run(self, runner) -> None:
        if self.token_placement:  # before any pass: a config error
            check_token_placement(
                getattr(get_ori_model(runner.model), 'backbone', None))
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, dict) or wrapper is None:
            return  # test()/val(): nothing to arm
        if not isinstance(wrapper, MaskedUpdateMixin):
            raise TypeError(
                'FisherSelectionHook needs a masked optimizer wrapper: set '
                "optim_wrapper.constructor='FisherMaskOptimWrapperConstructor'"
                f' (got {type(wrapper).__name__})')
        wrapper.bind_param_names(get_ori_model(runner.model))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the selection of a checkpoint that the run resumes from.

        With the optimizer state in the checkpoint the wrapper re-arms
        itself from it; without (``CheckpointHook(save_optimizer=False)``)
        :meth:`before_train` arms it from this record, so a resumed run
        never selects again.  ``load_from`` without ``resume`` only
        initialises weights: a new run selects anew.
        """
        if getattr(runner, '_resume', False):
            self._resumed_selection = checkpoint.get('selection')

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        model = get_ori_model(runner.model)
        shapes = {n: p.shape for n, p in model.named_parameters()}
        resumed = self._resumed_selection
        if resumed is None and not wrapper.armed:
            raise RuntimeError(
                'resuming from a checkpoint that holds no parameter '
                "selection (no 'selection' record, no masked optimizer "
                'state): the run would select different entries than it '
                'trained. Resume from a checkpoint written by this run, or '
                'start a new run (load_from) instead of --resume')
        restored = wrapper.selection if wrapper.armed else (
            None if resumed is _NOT_RESUMED else resumed)
        if restored is not None:
            # The weights are the checkpoint's: its base is not re-checked.
            validate_record(restored, shapes, 'the resumed checkpoint',
                            roles=wrapper.roles)
            if not wrapper.armed:
                wrapper.arm(restored)
            print_log('Selection restored from the checkpoint; the Fisher '
                      'pass is not run again.', logger='current')
            self._report(runner, model, wrapper, write=False)
            self._training_form(runner, model, wrapper)
            return
        if self.selection_file is not None:
            if not osp.isfile(self.selection_file):
                raise FileNotFoundError(
                    f'FisherSelectionHook: selection_file '
                    f'{self.selection_file!r} does not exist; write it with '
                    'tools/compute_fisher.py CONFIG --out DIR (DIR/'
                    'selection.pth) or drop selection_file to run the pass')
            record = load_checkpoint_file(self.selection_file,
                                          map_location='cpu')
            # Made elsewhere: it must fit this model, rules and weights.
            validate_record(record, shapes, self.selection_file,
                            roles=wrapper.roles)
            check_base_checkpoint(record, base_checkpoint(runner.cfg),
                                  self.selection_file)
            print_log(f'Selection loaded from {self.selection_file}; the '
                      'Fisher pass is skipped.', logger='current')
        else:
            record = self.selection.run(runner.cfg, model, wrapper.roles)
        self._check_ranks_agree(record['checksum'])
        if self.token_placement:
            self.place_tokens(model, record)
        wrapper.arm(record)
        self._report(runner, model, wrapper, write=True)
        self._training_form(runner, model, wrapper)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, MaskedUpdateMixin) and wrapper.armed:
            checkpoint['selection'] = wrapper.selection

    def _training_form(self, runner, model, wrapper) -> None:
        """Sparse values where possible; off what trains nothing; re-wrap.

        Tensors that train nothing keep ``requires_grad=True`` until here
        (MMEngine builds the optimizer and DDP before any hook runs):
        autograd would still compute their gradients and DDP all-reduce
        them.  They are switched off now -- tensors frozen by the
        eligibility rules, the dense weights of sparse-value layers,
        candidates with no selected entry.  Under DDP the model is then
        wrapped again with the runner's own ``wrap_model``: the new reducer
        registers only the tensors that still require gradients, and the
        old one, with its hooks, is dropped.
        """
        form = apply_training_form(
            model, wrapper, self.sparse_values, self.sparse_backend,
            ema_models=self._ema_models(runner))
        print_log(form.path_table(model, wrapper.selection['indices']),
                  logger='current')
        message = form.summary(model)
        if (form.layers or form.switched_off) and \
                is_model_wrapper(runner.model):
            wrapper_cfg = copy.deepcopy(runner.cfg.get('model_wrapper_cfg'))
            runner.model = runner.wrap_model(wrapper_cfg, model)
            message += (f'; the model was wrapped again in '
                        f'{type(runner.model).__name__}, which registers '
                        'only these')
        print_log(message, logger='current')
        runner.message_hub.update_info('grad_elements',
                                       gradient_elements(model))

    @staticmethod
    def _ema_models(runner) -> list:
        """The averaged copies of every ``EMAHook`` (made in before_run)."""
        return [
            hook.ema_model.module for hook in runner.hooks
            if isinstance(hook, EMAHook) and hasattr(hook, 'ema_model')
        ]

    # -- co-selection ------------------------------------------------------
    def place_tokens(self, model, record: dict) -> list:
        """Choose and set the backbone's token-selection blocks."""
        backbone = getattr(model, 'backbone', None)
        check_token_placement(backbone)
        densities = block_densities(record['layers'], VIT_BLOCK_PATTERN)
        blocks = choose_blocks(densities, **self.token_placement)
        backbone.set_keep_layers(blocks)
        record['token_blocks'] = blocks
        record['token_placement'] = dict(
            self.token_placement, keep_rate=backbone.keep_rate,
            keep_round=getattr(backbone, 'keep_round', None))
        table = ', '.join(f'{b}: {100 * d:.3f}%'
                          for b, d in densities.items())
        print_log(
            f'Token selection placed in blocks {blocks} '
            f'({self.token_placement.get("mode", "sparse")} placement, '
            f'keep_rate={backbone.keep_rate}); selected-parameter density '
            f'per block: {table}', logger='current')

    # -- checks and reporting -------------------------------------------------
    @staticmethod
    def _check_ranks_agree(checksum: str) -> None:
        checksums = all_gather_object(checksum)
        if len(set(checksums)) != 1:
            raise RuntimeError(
                'ranks derived different selections (checksums '
                f'{checksums}); the masked updates would drift apart')

    def _report(self, runner, model, wrapper, write: bool) -> None:
        record = wrapper.selection
        total = count_parameters(model)['total']
        trainable = wrapper.num_updated()
        budget = record.get('budget') or {}
        settings = record.get('settings') or {}
        details = ', '.join(f'{k}={v}' for k, v in settings.items()
                            if k != 'rule')
        print_log(f'Parameter selection ({settings.get("rule")}; {details}):'
                  f'\n{format_layer_table(record)}', logger='current')
        line = (f'Trainable parameters: {trainable:,} / {total:,} '
                f'({100 * trainable / total:.3f}% of the model)')
        if budget.get('denominator'):
            line += (f'; {100 * trainable / budget["denominator"]:.3f}% of '
                     f'the {budget["denominator_kind"]} '
                     f'({budget["denominator"]:,})')
            if budget.get('target_ratio') is not None:
                line += f', target {100 * budget["target_ratio"]:.3f}%'
        print_log(line, logger='current')
        runner.message_hub.update_info('trainable_params', trainable)
        if write:
            out_dir = osp.join(runner.work_dir, 'selection')
            if save_selection(record, out_dir, plot=self.save_plot):
                print_log(f'Selection, summary and plot written to '
                          f'{out_dir}', logger='current')
