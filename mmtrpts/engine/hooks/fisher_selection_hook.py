"""Run the Fisher pass before training and arm the masked optimizer."""
import os.path as osp
from typing import Optional

import torch
from mmengine.dist import all_gather_object, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS
from mmpretrain.utils import get_ori_model

from ...analysis.selection_report import format_layer_table, write_summary
from ...selection import (block_groups, budget_to_entries, calibrate_trpts,
                          select_global_topk, select_gps, select_trpts)
from ...selection.eligibility import FULL, MASKED
from ...selection.placement import block_densities, choose_blocks
from ...selection.record import build_record, validate_record
from ..fisher_pass import (build_fisher_dataloader, compute_fisher_scores,
                           linear_probe_head)
from ..optimizers.masked_update_mixin import MaskedUpdateMixin

_RULES = ('trpts', 'gps', 'global_topk')


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

    Rules (TR-PTS, ICCV 2025; GPS, CVPR 2024; SPT, ICCV 2023):

    - ``'trpts'``: global top-M% -> per-matrix density w_l -> connections per
      neuron ``C_l = max(1, w_l / min(w) * c_min)`` -> per-row top-C_l.
      With ``target_ratio`` M (and, if needed, a continuous ``c_min``) is
      calibrated so trainable / denominator lands within ``tolerance``.
    - ``'gps'``: uniform ``k`` per row.
    - ``'global_topk'``: unstructured top ``num`` (or ``fraction``) entries.

    Example:
        >>> optim_wrapper = dict(
        ...     constructor='FisherMaskOptimWrapperConstructor',
        ...     optimizer=dict(type='Adam', lr=1e-3, weight_decay=0.))
        >>> custom_hooks = [
        ...     dict(type='FisherSelectionHook', target_ratio=0.0034)]

    Args:
        rule (str): ``'trpts'`` (default), ``'gps'`` or ``'global_topk'``.
        target_ratio (float, optional): Budget: trainable parameters (masked
            selection + fully trained tensors, head included) over the
            denominator.  TR-PTS reports 0.0034 (VTAB-1k), 0.0060 (FGVC).
        m_percent (float, optional): Explicit M for ``'trpts'`` (instead of
            ``target_ratio``).
        c_min (float): C_min of ``'trpts'``. Defaults to 1.
        c_max (int, optional): Upper clip of C_l.
        weight (str): w_l: ``'density'`` (default), ``'count'``, ``'sum'``.
        rounding (str): ``'round'`` (default), ``'floor'``, ``'ceil'``.
        granularity (str): ``'matrix'`` (default) or ``'block'`` (matrices
            of a block share one C_l).
        k (int, optional): Connections per row for ``'gps'``.
        num (int, optional) / fraction (float, optional): For
            ``'global_topk'``.
        budget_denominator (str): ``'backbone'`` (default; reproduces the
            papers' 0.34% / 0.60%) or ``'model'``.
        tolerance (float): Relative budget tolerance. Defaults to 0.05.
        batch_size (int): Fisher batch size per rank. Defaults to 32.
        pipeline (str): ``'test'`` (deterministic transform; default) or
            ``'train'``.
        max_samples (int, optional): Score only the first N training samples
            (default: the whole training split).
        max_batches (int, optional): Cap on batches per rank (SPT: 16).
        head (str): ``'random'`` (default: the head's own random init) or
            ``'linear_probe'`` (train the head on frozen features first).
        probe_epochs (int) / probe_lr (float): Linear-probe settings.
        selection_file (str, optional): A record written by
            ``tools/compute_fisher.py``; skips the pass.
        token_placement (dict, optional): Parameter-token co-selection for
            a ``TokenKeepFuseViT`` backbone: ``dict(mode='sparse',
            num_blocks=3)`` puts token selection into the blocks with the
            lowest selected-parameter density; modes ``'sparse'``,
            ``'dense'``, ``'random'`` (``seed``), ``'explicit'``
            (``blocks``).  The choice is stored in the backbone's
            ``keep_layer_mask`` buffer, so checkpoints carry it.  The Fisher
            pass always runs with token selection off.
        save_plot (bool): Write ``selection_density.png``. Defaults to True.
        progress (bool): Show a progress bar. Defaults to True.
    """
    # After EMAHook.before_train, which may copy EMA weights into the model.
    priority = 'BELOW_NORMAL'

    def __init__(self, rule: str = 'trpts',
                 target_ratio: Optional[float] = None,
                 m_percent: Optional[float] = None, c_min: float = 1.0,
                 c_max: Optional[int] = None, weight: str = 'density',
                 rounding: str = 'round', granularity: str = 'matrix',
                 k: Optional[int] = None, num: Optional[int] = None,
                 fraction: Optional[float] = None,
                 budget_denominator: str = 'backbone',
                 tolerance: float = 0.05, batch_size: int = 32,
                 pipeline: str = 'test', max_samples: Optional[int] = None,
                 max_batches: Optional[int] = None, head: str = 'random',
                 probe_epochs: int = 10, probe_lr: float = 1e-3,
                 selection_file: Optional[str] = None,
                 token_placement: Optional[dict] = None,
                 save_plot: bool = True, progress: bool = True):
        if rule not in _RULES:
            raise ValueError(f'rule must be one of {_RULES}, got {rule!r}')
        if rule == 'trpts' and (target_ratio is None) == (m_percent is None):
            raise ValueError("rule='trpts' needs exactly one of target_ratio "
                             'and m_percent')
        if rule == 'gps' and k is None:
            raise ValueError("rule='gps' needs k (connections per row)")
        if rule == 'global_topk' and (num is None) == (fraction is None):
            raise ValueError("rule='global_topk' needs exactly one of num "
                             'and fraction')
        if head not in ('random', 'linear_probe'):
            raise ValueError(f"head must be 'random' or 'linear_probe', got "
                             f'{head!r}')
        if granularity not in ('matrix', 'block'):
            raise ValueError(f"granularity must be 'matrix' or 'block', got "
                             f'{granularity!r}')
        if budget_denominator not in ('backbone', 'model'):
            raise ValueError("budget_denominator must be 'backbone' or "
                             f"'model', got {budget_denominator!r}")
        self.rule = rule
        self.target_ratio = target_ratio
        self.rule_kwargs = dict(m_percent=m_percent, c_min=c_min,
                                c_max=c_max, weight=weight,
                                rounding=rounding, k=k, num=num,
                                fraction=fraction)
        self.granularity = granularity
        self.budget_denominator = budget_denominator
        self.tolerance = tolerance
        self.loader_kwargs = dict(batch_size=batch_size, pipeline=pipeline,
                                  max_samples=max_samples)
        self.max_batches = max_batches
        self.head = head
        self.probe = dict(epochs=probe_epochs, lr=probe_lr)
        self.selection_file = selection_file
        self.token_placement = dict(token_placement or {})
        self.save_plot = save_plot
        self.progress = progress

    # -- runner hooks ------------------------------------------------------
    def before_run(self, runner) -> None:
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, dict) or wrapper is None:
            return  # test()/val(): nothing to arm
        if not isinstance(wrapper, MaskedUpdateMixin):
            raise TypeError(
                'FisherSelectionHook needs a masked optimizer wrapper: set '
                "optim_wrapper.constructor='FisherMaskOptimWrapperConstructor'"
                f' (got {type(wrapper).__name__})')
        wrapper.bind_param_names(get_ori_model(runner.model))

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        model = get_ori_model(runner.model)
        if wrapper.armed:
            print_log('Selection restored from the checkpoint; the Fisher '
                      'pass is not run again.', logger='current')
            self._report(runner, model, wrapper, write=False)
            return
        shapes = {n: p.shape for n, p in model.named_parameters()}
        if self.selection_file is not None:
            record = torch.load(self.selection_file, map_location='cpu',
                                weights_only=True)
            validate_record(record, shapes, source=self.selection_file)
            print_log(f'Selection loaded from {self.selection_file}; the '
                      'Fisher pass is skipped.', logger='current')
        else:
            record = self.select(runner.cfg, model, wrapper.roles)
        self._check_ranks_agree(record['checksum'])
        if self.token_placement:
            record['token_blocks'] = self.place_tokens(model, record)
        wrapper.arm(record)
        self._report(runner, model, wrapper, write=True)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, MaskedUpdateMixin) and wrapper.armed:
            checkpoint['selection'] = wrapper.selection

    # -- co-selection ------------------------------------------------------
    def place_tokens(self, model, record: dict) -> list:
        """Choose and set the backbone's token-selection blocks."""
        backbone = getattr(model, 'backbone', None)
        if not hasattr(backbone, 'set_keep_layers'):
            raise TypeError(
                'token_placement needs a backbone with token selection '
                "(type='TokenKeepFuseViT'), got "
                f'{type(backbone).__name__}')
        densities = block_densities(record['layers'])
        blocks = choose_blocks(densities, **self.token_placement)
        backbone.set_keep_layers(blocks)
        table = ', '.join(f'{b}: {100 * d:.3f}%'
                          for b, d in densities.items())
        print_log(
            f'Token selection placed in blocks {blocks} '
            f'({self.token_placement.get("mode", "sparse")} placement, '
            f'keep_rate={backbone.keep_rate}); selected-parameter density '
            f'per block: {table}', logger='current')
        return blocks

    # -- the pass ----------------------------------------------------------
    def select(self, cfg, model, roles) -> dict:
        """Run the Fisher pass and the rule; return the selection record.

        Token selection (if the backbone has it) is off during the pass:
        its placement depends on the result.
        """
        backbone = getattr(model, 'backbone', None)
        if hasattr(backbone, 'token_selection_disabled'):
            with backbone.token_selection_disabled():
                return self._select(cfg, model, roles)
        return self._select(cfg, model, roles)

    def _select(self, cfg, model, roles) -> dict:
        loader = build_fisher_dataloader(cfg, **self.loader_kwargs)
        extra = dict(head=self.head)
        if self.head == 'linear_probe':
            extra['probe_train_acc'] = linear_probe_head(
                model, loader, **self.probe)
            print_log(f'Linear-probe warm-up of the head: train accuracy '
                      f'{extra["probe_train_acc"]:.3f}', logger='current')
        params = {n: p for n, p in model.named_parameters()
                  if roles[n] == MASKED}
        scores, stats = compute_fisher_scores(
            model, loader, params, max_batches=self.max_batches,
            progress=self.progress)
        print_log(f'Fisher pass: {stats["num_samples"]} samples in '
                  f'{stats["num_batches"]} batches, {stats["seconds"]} s',
                  logger='current')
        full = [n for n, role in roles.items() if role == FULL]
        budget = self._budget(model, full)
        result = self._apply_rule(scores, budget)
        budget.update(trainable=result.num_selected + budget['full'])
        budget['realized_ratio'] = budget['trainable'] / budget['denominator']
        return build_record(
            result, full, {n: p.shape for n, p in params.items()},
            budget=budget, fisher=dict(stats, **self.loader_kwargs,
                                       max_batches=self.max_batches),
            **extra)

    def _budget(self, model, full) -> dict:
        named = dict(model.named_parameters())
        if self.budget_denominator == 'backbone':
            denominator = sum(p.numel() for n, p in named.items()
                              if n.startswith('backbone.'))
        else:
            denominator = sum(p.numel() for p in named.values())
        return dict(target_ratio=self.target_ratio, denominator=denominator,
                    denominator_kind=self.budget_denominator,
                    full=sum(named[n].numel() for n in full))

    def _apply_rule(self, scores, budget):
        kw = self.rule_kwargs
        if self.rule == 'gps':
            return select_gps(scores, kw['k'])
        if self.rule == 'global_topk':
            if self.target_ratio is not None:
                raise ValueError('target_ratio is not used by global_topk; '
                                 'give num or fraction')
            return select_global_topk(scores, num=kw['num'],
                                      fraction=kw['fraction'])
        trpts = dict(c_max=kw['c_max'], weight=kw['weight'],
                     rounding=kw['rounding'])
        if self.granularity == 'block':
            trpts['groups'] = block_groups(list(scores))
        if self.target_ratio is None:
            return select_trpts(scores, kw['m_percent'], c_min=kw['c_min'],
                                **trpts)
        target = budget_to_entries(self.target_ratio, budget['denominator'],
                                   budget['full'])
        return calibrate_trpts(scores, target, tolerance=self.tolerance,
                               c_min=kw['c_min'], **trpts)

    # -- checks and reporting --------------------------------------------------
    @staticmethod
    def _check_ranks_agree(checksum: str) -> None:
        checksums = all_gather_object(checksum)
        if len(set(checksums)) != 1:
            raise RuntimeError(
                'ranks derived different selections (checksums '
                f'{checksums}); the masked updates would drift apart')

    def _report(self, runner, model, wrapper, write: bool) -> None:
        record = wrapper.selection
        total = sum(p.numel() for p in model.parameters())
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
        if write and is_main_process():
            out_dir = osp.join(runner.work_dir, 'selection')
            write_summary(record, out_dir, plot=self.save_plot)
            torch.save(record, osp.join(out_dir, 'selection.pth'))
            print_log(f'Selection, summary and plot written to {out_dir}',
                      logger='current')
