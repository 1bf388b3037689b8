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
import os.path as osp
import re
from typing import Dict, Iterable, Optional

import torch
import torch.nn as nn
from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.model import initialize

from ..selection import ParameterSelector
from ..selection.eligibility import MASKED
from ..selection.placement import block_densities
from ..selection.record import to_plain
from ..selection.report import write_summary
from ..utils import sha256_file
from ..visualization.selection_density import plot_selection_density
from .fisher_pass import (build_fisher_dataloader, compute_fisher_scores,
                          linear_probe_head)

HEADS = ('random', 'linear_probe')
PIPELINES = ('test', 'train')
#: The transformer blocks of a ViT (``backbone.layers.<i>.``), anchored at
#: the start of the name: a Swin FFN's ``...blocks.j.ffn.layers.0.0`` or a
#: ConvNeXt stage is not a ViT block (docs/methods/trpts.md §12).
VIT_BLOCK_PATTERN = r'^(?:backbone\.)?layers\.(\d+)\.'
#: What ``granularity='block'`` of the TR-PTS rule groups by
#: (:func:`mmtrpts.selection.trpts.block_groups`' default pattern).
_BLOCK_GROUP_PATTERN = r'(?:^|\.)layers\.(\d+)\.'


def check_block_granularity(names: Iterable[str],
                            backbone: Optional[str] = None) -> None:
    """Refuse ``granularity='block'`` on a model without ViT blocks.

    The block granularity pools the matrices of ``layers.<i>.``; on a
    hierarchical backbone that key either matches nothing (ConvNeXt: every
    matrix would silently stay a unit of its own) or the wrong thing (Swin:
    the ``ffn.layers.0`` / ``ffn.layers.1`` of every block would form two
    network-wide groups).

    Args:
        names (Iterable[str]): The masked parameter names.
        backbone (str, optional): The backbone's type, for the message.

    Raises:
        ValueError: Naming the backbone and an offending tensor.
    """
    names = list(names)
    anchored, loose = re.compile(VIT_BLOCK_PATTERN), re.compile(
        _BLOCK_GROUP_PATTERN)
    stray = [n for n in names if loose.search(n) and not anchored.match(n)]
    if stray or not any(anchored.match(n) for n in names):
        example = f' (e.g. {stray[0]})' if stray else ''
        raise ValueError(
            f"granularity='block' pools the matrices of each ViT block "
            f'(backbone.layers.<i>.), but the masked tensors of '
            f'{backbone or "this model"} do not follow that layout'
            f"{example}; use granularity='matrix' (docs/methods/trpts.md "
            '§12)')


@contextlib.contextmanager
def seeded_head(model: nn.Module, seed: int):
    """Score through a head initialised from ``seed``; restore it after.

    The head is re-initialised by its own ``init_cfg`` (MMPretrain's
    ``LinearClsHead``: ``Normal(std=0.01)``; the configs here:
    ``TruncNormal(std=0.02)``), or by ``reset_parameters`` of its layers
    when it has none, under a forked RNG, so neither the run's random state
    nor the head it trains from changes.
    """
    head = getattr(model, 'head', None)
    if head is None:
        yield
        return
    saved = {k: v.detach().clone() for k, v in head.state_dict().items()}
    devices = [p.device for p in head.parameters() if p.is_cuda][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        init_cfg = getattr(head, 'init_cfg', None)
        if init_cfg:
            initialize(head, init_cfg)
        else:
            for module in head.modules():
                if hasattr(module, 'reset_parameters'):
                    module.reset_parameters()
    try:
        yield
    finally:
        head.load_state_dict(saved)


def describe_dataset(cfg) -> dict:
    """What the pass scores: the training dataset's identifying settings."""
    dataset = dict(cfg.train_dataloader.dataset)
    keys = ('type', 'data_root', 'task', 'dataset', 'split', 'ann_file',
            'data_prefix', 'indices')
    return {k: dataset[k] for k in keys if k in dataset}


def base_checkpoint(cfg) -> Optional[dict]:
    """Path and sha256 of the weights the selection is made on.

    ``load_from`` if set, else the backbone's ``init_cfg`` ``Pretrained``
    checkpoint; None for a randomly initialised model.
    """
    path = cfg.get('load_from')
    if not path:
        init_cfg = cfg.model.get('backbone', {}).get('init_cfg') or {}
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            path = init_cfg.get('checkpoint')
    if not path or not osp.isfile(osp.expanduser(path)):
        return None
    return dict(path=path, sha256=sha256_file(osp.expanduser(path)))


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
        seed (int): Seed of the scoring head. With ``head='random'`` the
            pass scores through a head initialised (by its own
            ``init_cfg``) from this seed, then the model's head is put back:
            the selection does not depend on the run's random state, so
            ``tools/compute_fisher.py`` and the hook give the same record.
            Defaults to 0.
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
                 seed: int = 0,
                 progress: bool = True,
                 **rule_options):
        self.selector = ParameterSelector(rule, **rule_options)
        if head not in HEADS:
            raise ValueError(f'head must be one of {HEADS}, got {head!r}')
        for name, value in (('max_samples', max_samples),
                            ('max_batches', max_batches)):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f'{name} must be None or an integer >= 1, '
                                 f'got {value!r}')
        if pipeline not in PIPELINES:
            raise ValueError(f'pipeline must be one of {PIPELINES}, got '
                             f'{pipeline!r}')
        self.loader_kwargs = dict(
            batch_size=batch_size, pipeline=pipeline, max_samples=max_samples)
        self.max_batches = max_batches
        self.head = head
        self.probe = dict(epochs=probe_epochs, lr=probe_lr)
        self.seed = seed
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
        data = describe_dataset(cfg)
        return self.run_on_loader(model, loader, roles, data=data,
                                  base_checkpoint=base_checkpoint(cfg))

    def run_on_loader(self, model: nn.Module, loader, roles: Dict[str, str],
                      **provenance) -> dict:
        """:meth:`run` on a given scoring dataloader (this rank's shard).

        ``provenance`` (e.g. ``data``, ``base_checkpoint``) is stored in the
        record as it is.
        """
        backbone = getattr(model, 'backbone', None)
        if self.selector.options.get('granularity') == 'block':
            check_block_granularity(
                (n for n, r in roles.items() if r == MASKED),
                type(backbone).__name__ if backbone is not None else None)
        off = getattr(backbone, 'token_selection_disabled',
                      contextlib.nullcontext)
        data = provenance.get('data') or {}
        source = ('the training split (' + ', '.join(
            f'{k}={v}' for k, v in data.items()) + ')') if data else \
            'the scoring data'
        with off():  # the placement depends on the result
            record = self._select(model, loader, roles, source)
        try:
            densities = block_densities(record['layers'], VIT_BLOCK_PATTERN)
        except ValueError:  # no ViT blocks (Swin, ConvNeXt, a ResNet)
            densities = None
        record.update(
            seed=self.seed, rule_options=dict(self.selector.options),
            roles=dict(roles), block_densities=densities,
            **to_plain(provenance, 'provenance'))
        return record

    def _select(self, model: nn.Module, loader, roles: Dict[str, str],
                source: str) -> dict:
        if self.head == 'random':
            with seeded_head(model, self.seed):
                return self._score_and_select(model, loader, roles, source)
        return self._score_and_select(model, loader, roles, source)

    def _score_and_select(self, model: nn.Module, loader,
                          roles: Dict[str, str], source: str) -> dict:
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
            progress=self.progress,
            source=source)
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


def check_base_checkpoint(record: dict, current: Optional[dict],
                          source: str) -> None:
    """Refuse a record made on other weights than the run's.

    Args:
        record (dict): A selection record (``base_checkpoint``: path and
            sha256 of the weights it was scored on; absent in records of
            older versions, which are not checked).
        current (dict, optional): :func:`base_checkpoint` of this run.
        source (str): Where the record came from, for the message.

    Raises:
        ValueError: If the recorded and current weights differ by content.
    """
    recorded = record.get('base_checkpoint')
    if recorded is None:
        return
    if current is None or current['sha256'] != recorded['sha256']:
        now = ('randomly initialised weights' if current is None else
               f"{current['path']} (sha256 {current['sha256'][:12]})")
        raise ValueError(
            f'the selection in {source} was made on {recorded["path"]} '
            f'(sha256 {recorded["sha256"][:12]}), but this run starts from '
            f'{now}: the Fisher scores of other weights select other '
            'entries. Select again for these weights')


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
    paths['pth'] = osp.join(out_dir, 'selection.pth')  # dir: write_summary
    torch.save(record, paths['pth'])
    return paths
