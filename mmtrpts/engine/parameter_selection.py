"""The TR-PTS parameter-selection pipeline: data -> Fisher pass -> record.

One entry point that ``FisherSelectionHook``, ``tools/compute_fisher.py``
(through :func:`mmtrpts.apis.compute_selection`) and the efficiency
benchmarks all call, so the sequence exists once:

1. (optional) a linear-probe warm-up of the head on frozen features;
2. the Fisher pass over the scoring data with token selection off
   (:func:`~.fisher_pass.compute_fisher_scores`);
3. the rule and its budget (:class:`mmtrpts.selection.ParameterSelector`,
   validated when this object is built, before any pass).

The settings are the ones a config gives ``FisherSelectionHook``; the
hook adds only runner glue (arming the optimizer wrapper, token placement,
checkpoints, logs).  The path of ``target_ratio`` from a config to its use:
``FisherSelectionHook(target_ratio=...)`` -> ``ParameterSelection`` ->
``ParameterSelector`` (checked) -> ``ParameterSelector.select`` ->
``budget_to_entries`` -> ``calibrate_trpts``.
"""
import contextlib
import os
import os.path as osp
from typing import Dict, Optional

import torch
import torch.nn as nn
from mmengine.dist import is_main_process
from mmengine.logging import print_log

from ..selection import ParameterSelector
from ..selection.eligibility import MASKED
from ..selection.report import write_summary
from ..visualization.selection_density import plot_selection_density
from .fisher_pass import (build_fisher_dataloader, compute_fisher_scores,
                          linear_probe_head)

HEADS = ('random', 'linear_probe')
PIPELINES = ('test', 'train')


class ParameterSelection:
    """Fisher pass + selection rule, configured once and checked early.

    Example:
        >>> selection = ParameterSelection(rule='trpts', target_ratio=0.0034)
        >>> record = selection.run(cfg, model, roles)  # cfg.train_dataloader

    Args:
        rule (str): ``'trpts'`` (default), ``'gps'`` or ``'global_topk'``.
        batch_size (int): Fisher batch size per rank. Defaults to 32.
        pipeline (str): ``'test'`` (the deterministic test-time transform;
            default) or ``'train'``.
        max_samples (int, optional): Score only the first N training
            samples (default: the whole training split).
        max_batches (int, optional): Cap on batches per rank (SPT: 16).
        head (str): ``'random'`` (default: the head's own random init) or
            ``'linear_probe'`` (train the head on frozen features first).
        probe_epochs (int) / probe_lr (float): Linear-probe settings.
        progress (bool): Show a progress bar. Defaults to True.
        **rule_options: The rule's options, see
            :class:`mmtrpts.selection.ParameterSelector` (e.g.
            ``target_ratio``, ``m_percent``, ``k``); with none, TR-PTS at
            the paper's VTAB-1k budget, 0.34% of the backbone.
    """

    def __init__(self,
                 rule: str = 'trpts',
                 batch_size: int = 32,
                 pipeline: str = 'test',
                 max_samples: Optional[int] = None,
                 max_batches: Optional[int] = None,
                 head: str = 'random',
                 probe_epochs: int = 10,
                 probe_lr: float = 1e-3,
                 progress: bool = True,
                 **rule_options):
        self.selector = ParameterSelector(rule, **rule_options)
        if head not in HEADS:
            raise ValueError(f'head must be one of {HEADS}, got {head!r}')
        if pipeline not in PIPELINES:
            raise ValueError(f'pipeline must be one of {PIPELINES}, got '
                             f'{pipeline!r}')
        self.loader_kwargs = dict(
            batch_size=batch_size, pipeline=pipeline, max_samples=max_samples)
        self.max_batches = max_batches
        self.head = head
        self.probe = dict(epochs=probe_epochs, lr=probe_lr)
        self.progress = progress

    def run(self, cfg, model: nn.Module, roles: Dict[str, str]) -> dict:
        """Score the config's training split and select.

        Args:
            cfg: The run config (``train_dataloader`` and, for
                ``pipeline='test'``, a test or val dataloader).
            model (nn.Module): The unwrapped classifier, weights loaded.
            roles (Dict[str, str]): Eligibility role per parameter name.

        Returns:
            dict: The selection record.
        """
        loader = build_fisher_dataloader(cfg, **self.loader_kwargs)
        return self.run_on_loader(model, loader, roles)

    def run_on_loader(self, model: nn.Module, loader,
                      roles: Dict[str, str]) -> dict:
        """:meth:`run` on a given scoring dataloader (this rank's shard)."""
        backbone = getattr(model, 'backbone', None)
        off = getattr(backbone, 'token_selection_disabled',
                      contextlib.nullcontext)
        with off():  # the placement depends on the result
            return self._select(model, loader, roles)

    def _select(self, model: nn.Module, loader, roles: Dict[str, str]) -> dict:
        extra = dict(head=self.head)
        if self.head == 'linear_probe':
            extra['probe_train_acc'] = linear_probe_head(
                model, loader, **self.probe)
            print_log(
                f'Linear-probe warm-up of the head: train accuracy '
                f'{extra["probe_train_acc"]:.3f}',
                logger='current')
        named = dict(model.named_parameters())
        params = {n: p for n, p in named.items() if roles[n] == MASKED}
        scores, stats = compute_fisher_scores(
            model,
            loader,
            params,
            max_batches=self.max_batches,
            progress=self.progress)
        print_log(
            f'Fisher pass: {stats["num_samples"]} samples in '
            f'{stats["num_batches"]} batches, {stats["seconds"]} s',
            logger='current')
        return self.selector.select(
            scores,
            named,
            roles,
            fisher=dict(
                stats, **self.loader_kwargs, max_batches=self.max_batches),
            **extra)


def save_selection(record: dict, out_dir: str, plot: bool = True) -> dict:
    """Write ``selection.pth``, ``selection.json`` and the density plot.

    Only the main process writes.  ``selection.pth`` is the record itself
    (``FisherSelectionHook(selection_file=...)`` loads it).

    Returns:
        dict: The paths written (empty on other ranks).
    """
    if not is_main_process():
        return {}
    paths = write_summary(record, out_dir)
    if plot:
        paths['png'] = osp.join(out_dir, 'selection_density.png')
        plot_selection_density(record, paths['png'])
    paths['pth'] = osp.join(out_dir, 'selection.pth')
    os.makedirs(out_dir, exist_ok=True)
    torch.save(record, paths['pth'])
    return paths
