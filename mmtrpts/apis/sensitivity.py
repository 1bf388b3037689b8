"""SPT stage 1: the sensitivity pass and the allocation file.

SPT (He et al., ICCV 2023) needs its scores *before* the model exists: which
matrices get a LoRA / Adapter decides the model's parameters, and MMEngine
builds the model, wraps it in DDP and builds the optimizer before any hook
runs (docs/design/runner_order.md §1).  So the pass is a separate stage, run
once per task and budget like SPT's own scripts:

1. :func:`compute_sensitivity` builds the config's model with a *plain*
   ``VisionTransformer`` backbone (the ``SPTViT`` arguments dropped), loads
   the pretrained weights, keeps the head's random init, runs the TR-PTS
   Fisher pass (``mmtrpts.engine.fisher_pass``) over SPT's scored tensors
   and writes the allocation of
   :func:`mmtrpts.selection.spt_allocation.allocate_spt`;
2. training builds ``SPTViT(sensitivity_file=...)``, which reads the file
   in ``__init__``: structure and ``requires_grad`` are fixed on every rank
   before DDP wraps the model.

Defaults are SPT's pass (16 batches x 32 images in sequential order, plain
CE, random head; docs/methods/spt.md §1) except the model mode and transform,
which follow our TR-PTS pass: ``mode='eval'`` (drop-path off, reproducible) and
the test-time transform.  ``mode='train'`` reproduces SPT (drop-path 0.1
active).  A config's top-level ``sensitivity_cfg`` dict overrides the
defaults, keyword arguments override both.
"""
import copy
import itertools
import os
import os.path as osp
from collections import Counter
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.dist import barrier, is_main_process
from mmengine.logging import MMLogger, print_log
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

from ..selection.report import short_name
from ..engine.fisher_pass import (build_fisher_dataloader,
                                  compute_fisher_scores)
from ..models.backbones.spt_vit import plain_vit_cfg
from ..selection.spt_allocation import FUSED_LABELS, allocate_spt, is_scored
from .run_config import runner_model_cfg

#: Defaults of ``sensitivity_cfg`` (``budget`` in millions of parameters,
#: ``split`` replaces the training split's name, ``tau_*`` in entries).
SENSITIVITY_DEFAULTS = dict(
    budget=None, structured_type=None, batch_size=32, max_batches=16,
    mode='eval', pipeline='test', split=None, seed=0, alpha=10, beta=5,
    tau_step=20_000, tau_max=1_580_000, structured_only=False)
_CALLS = itertools.count()


def _settings(cfg: Config, overrides: dict) -> dict:
    given = dict(cfg.get('sensitivity_cfg') or {})
    given.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(given) - set(SENSITIVITY_DEFAULTS)
    if unknown:
        raise KeyError(f'unknown sensitivity settings {sorted(unknown)}; '
                       f'expected some of {sorted(SENSITIVITY_DEFAULTS)}')
    settings = dict(SENSITIVITY_DEFAULTS, **given)
    if settings['budget'] is None:
        raise ValueError('no budget: pass budget=<millions of parameters> '
                         '(--budget) or set sensitivity_cfg.budget in the '
                         'config')
    backbone = cfg.model.backbone
    settings['structured_type'] = settings['structured_type'] or \
        backbone.get('structured_type', 'lora')
    settings['rank'] = backbone.get('rank', 8)
    return settings


def allocation_summary(allocation: dict) -> str:
    """One line per allocation: totals and structured matrices per kind."""
    counts = allocation['counts']
    kinds = Counter()
    for name in allocation['structured']:
        unit = allocation['units'][name]
        kinds[unit['label'] if unit['label'] in FUSED_LABELS else
              short_name(unit['param']).split('.')[-1]] += 1
    per_kind = ', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))
    return (f'SPT {allocation["settings"]["structured_type"]} allocation: '
            f'total {counts["total"]:,} (target {counts["target"]:,}, tau '
            f'{counts["tau"]:,}) = structured {counts["structured"]:,} '
            f'({len(allocation["structured"])} matrices: {per_kind or "-"})'
            f' + vectors {counts["vectors"]:,} '
            f'({len(allocation["full_vectors"])} full) + unstructured '
            f'{counts["unstructured"]:,} + cls_token '
            f'{counts["cls_token"]:,}')


def compute_sensitivity(cfg: Config, out: Optional[str] = None,
                        device: Optional[str] = None, progress: bool = True,
                        **overrides) -> dict:
    """Score a config's pretrained model and write SPT's allocation file.

    Example:
        >>> cfg = Config.fromfile('configs/spt/vit-b-lora_vtab1k-cifar100.py')
        >>> allocation = compute_sensitivity(cfg, budget=0.4)

    Args:
        cfg (Config): A config with an ``SPTViT`` backbone; it is not
            modified except ``cfg.model.backbone.sensitivity_file``, which
            is set to the file written.  Its ``log_level`` applies.
        out (str, optional): Where to write the allocation. Defaults to
            ``cfg.model.backbone.sensitivity_file``.
        device (str, optional): Defaults to ``'cuda'`` when available.
        progress (bool): Show a progress bar.
        **overrides: Any key of :data:`SENSITIVITY_DEFAULTS`; ``None``
            values are ignored.

    Returns:
        dict: The allocation, with the pass settings under ``'pass'``.
    """
    settings = _settings(cfg, overrides)
    out = out or cfg.model.backbone.get('sensitivity_file')
    if not out:
        raise ValueError('no output file: pass out=... or set '
                         'model.backbone.sensitivity_file')
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    MMLogger.get_instance(f'mmtrpts_sensitivity_{next(_CALLS)}',
                          log_level=cfg.get('log_level', 'INFO'))

    model_cfg = runner_model_cfg(cfg)
    model_cfg.backbone = plain_vit_cfg(cfg.model.backbone)
    torch.manual_seed(settings['seed'])  # the random head
    model = MODELS.build(model_cfg)
    model.init_weights()  # pretrained backbone
    model.to(device)
    data_cfg = copy.deepcopy(cfg)
    if settings['split'] is not None:
        data_cfg.train_dataloader.dataset.split = settings['split']
    loader = build_fisher_dataloader(
        data_cfg, batch_size=settings['batch_size'],
        pipeline=settings['pipeline'],
        max_samples=settings['batch_size'] * settings['max_batches'])
    params = {f'backbone.{n}': p for n, p in
              model.backbone.named_parameters() if is_scored(n)}
    scores, stats = compute_fisher_scores(
        model, loader, params, max_batches=settings['max_batches'],
        progress=progress, mode=settings['mode'])
    cls_token = getattr(model.backbone, 'cls_token', None)
    allocation = allocate_spt(
        {n[len('backbone.'):]: s for n, s in scores.items()},
        target=round(settings['budget'] * 1e6),
        structured_type=settings['structured_type'], rank=settings['rank'],
        alpha=settings['alpha'], beta=settings['beta'],
        tau_step=settings['tau_step'], tau_max=settings['tau_max'],
        cls_token=0 if cls_token is None else cls_token.numel(),
        structured_only=settings['structured_only'])
    allocation['pass'] = dict(settings, **stats)
    if is_main_process():
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        torch.save(allocation, out)
    barrier()
    cfg.model.backbone.sensitivity_file = out
    print_log(f'Sensitivity pass: {stats["num_samples"]} samples in '
              f'{stats["num_batches"]} batches ({settings["mode"]} mode); '
              f'{allocation_summary(allocation)}; written to {out}',
              logger='current')
    return allocation
