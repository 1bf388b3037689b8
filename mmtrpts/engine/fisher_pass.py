"""The Fisher pass over a runner's training split (framework glue).

The maths lives in :mod:`mmtrpts.selection`; this module feeds it: it builds
a deterministic, unpadded, per-rank shard of the training split, runs the
model in ``eval()`` mode in fp32 (dropout and drop-path off, no batch
augments), accumulates squared gradients with ``torch.autograd.grad`` on the
*unwrapped* model (DDP's reducer never fires) and all-reduces the sums, so
every rank derives the same selection.  ``mode='train'`` keeps dropout and
drop-path active instead (SPT's sensitivity pass, docs/methods/spt.md §1).
"""
import copy
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_gather_object, all_reduce, is_main_process
from mmengine.runner import Runner
from tqdm import tqdm

from ..selection.fisher import FisherAccumulator


def fisher_dataloader_cfg(cfg, batch_size: int = 32, pipeline: str = 'test',
                          max_samples: Optional[int] = None) -> dict:
    """A dataloader config over the run's training split for the pass.

    Args:
        cfg: The run config (``train_dataloader`` is required).
        batch_size (int): Images per batch and rank.
        pipeline (str): ``'test'`` (the deterministic test-time transform of
            ``test_dataloader``/``val_dataloader``; default) or ``'train'``.
        max_samples (int, optional): Score only the first N samples.
    """
    loader = copy.deepcopy(cfg.get('train_dataloader'))
    if loader is None:
        raise KeyError('the Fisher pass needs train_dataloader in the config')
    dataset = loader['dataset']
    if pipeline == 'test':
        eval_loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
        if eval_loader is None:
            raise KeyError("pipeline='test' needs test_dataloader or "
                           'val_dataloader in the config')
        dataset['pipeline'] = copy.deepcopy(
            eval_loader['dataset']['pipeline'])
    elif pipeline != 'train':
        raise ValueError(f"pipeline must be 'test' or 'train', got "
                         f'{pipeline!r}')
    if max_samples is not None:
        dataset['indices'] = int(max_samples)
    loader.update(
        batch_size=batch_size,
        sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
        persistent_workers=False)
    loader.pop('batch_sampler', None)
    return loader


def _inputs_and_labels(model: nn.Module,
                       data: dict) -> Tuple[torch.Tensor, torch.Tensor]:
    data = model.data_preprocessor(data, False)  # no batch augments
    labels = torch.cat([s.gt_label for s in data['data_samples']])
    return data['inputs'], labels.to(data['inputs'].device).long()


def _check_head(model: nn.Module) -> None:
    head = getattr(model, 'head', None)
    weights = [p for n, p in head.named_parameters() if n.endswith('weight')
               ] if head is not None else []
    if weights and all(not torch.any(w) for w in weights):
        raise ValueError(
            'the classification head is all zeros, so every backbone '
            'gradient (and Fisher score) is exactly zero; initialise the '
            "head randomly (e.g. init_cfg=dict(type='TruncNormal', "
            "layer='Linear', std=0.02)) or use head='linear_probe'")


@torch.no_grad()
def _features(model: nn.Module, dataloader) -> Tuple[List, torch.Tensor]:
    """Features of every rank's shard, in eval mode (no dropout/drop-path)."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for data in dataloader:
            inputs, y = _inputs_and_labels(model, data)
            out = model.extract_feat(inputs)
            feats.append(tuple(o.cpu() for o in out))
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    # Every rank gets every shard, in rank order.
    parts = all_gather_object(
        (tuple(torch.cat(x) for x in zip(*feats)), torch.cat(labels)))
    feats = tuple(torch.cat(x) for x in zip(*[p[0] for p in parts]))
    return feats, torch.cat([p[1] for p in parts])


def linear_probe_head(model: nn.Module, dataloader, epochs: int = 10,
                      lr: float = 1e-3, batch_size: int = 64,
                      seed: int = 0) -> float:
    """Train only the head on frozen backbone features (LP warm-up).

    Features come from the model in eval mode (dropout and drop-path off).
    Features of every rank's shard are gathered to all ranks, and every rank
    trains a *copy* of the head on the same data in the same order, then
    copies the trained weights into the model's head: no ``backward`` ever
    runs through the parameters of the (possibly DDP-wrapped) model, whose
    reducer hooks -- and ``static_graph=True`` -- would otherwise see a
    backward outside a training step.  Heads stay identical across ranks
    without gradient communication.

    Returns:
        float: The probe's final training accuracy.
    """
    feats, labels = _features(model, dataloader)
    probe = copy.deepcopy(model.head)
    probe.train()
    device = next(probe.parameters()).device
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), batch_size):
            idx = order[start:start + batch_size]
            batch = tuple(f[idx].to(device) for f in feats)
            loss = F.cross_entropy(probe(batch), labels[idx].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    probe.eval()
    with torch.no_grad():
        model.head.load_state_dict(probe.state_dict())
        correct = sum((probe(tuple(f[i:i + 512].to(device)
                                   for f in feats)).argmax(1).cpu() ==
                       labels[i:i + 512]).sum().item()
                      for i in range(0, len(labels), 512))
    return correct / len(labels)


def compute_fisher_scores(
        model: nn.Module, dataloader, params: Dict[str, torch.Tensor],
        max_batches: Optional[int] = None, progress: bool = True,
        mode: str = 'eval', source: str = 'the scoring data'
) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Diagonal empirical Fisher of ``params`` over ``dataloader``.

    Args:
        model (nn.Module): The unwrapped classifier (``data_preprocessor``,
            ``mode='tensor'`` returning logits).
        dataloader: This rank's shard of the scoring data.
        params (dict): name -> parameter to score.
        max_batches (int, optional): Stop after this many batches per rank.
        progress (bool): Show a progress bar on the main process.
        mode (str): ``'eval'`` (default: dropout and drop-path off,
            reproducible scores) or ``'train'`` (as SPT and GPS score).
        source (str): What the dataloader reads, for error messages.

    Returns:
        tuple: Scores (sum over all ranks' batches of squared batch-mean
        gradients, divided by the global number of batches) and statistics
        (``num_batches``, ``num_samples``, ``seconds``).

    Raises:
        RuntimeError: If no batch was seen (an empty split), if a batch's
            loss is not finite (naming the batch and its first images), or
            if every score is zero; on every rank alike under DDP.
    """
    if mode not in ('eval', 'train'):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    _check_head(model)
    was_training = model.training
    model.train(mode == 'train')
    start = time.time()
    accumulator = FisherAccumulator(params)
    num_samples = 0
    non_finite = []  # (batch index, loss, first image paths) of this rank
    total = len(dataloader) if max_batches is None else min(
        max_batches, len(dataloader))
    bar = tqdm(total=total, desc='Fisher pass', unit='batch',
               disable=not (progress and is_main_process()), mininterval=1)
    try:
        with torch.enable_grad():
            for i, data in enumerate(dataloader):
                if max_batches is not None and i >= max_batches:
                    break
                inputs, labels = _inputs_and_labels(model, data)
                logits = model(inputs.float(), mode='tensor')
                loss = F.cross_entropy(logits.float(), labels)
                if not torch.isfinite(loss):
                    paths = [s.get('img_path') for s in data['data_samples']]
                    non_finite.append((i, loss.item(), paths[:3]))
                accumulator.accumulate(loss)
                num_samples += len(labels)
                bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    counts = torch.tensor([accumulator.num_batches, num_samples,
                           len(non_finite)],
                          dtype=torch.float64,
                          device=next(iter(params.values())).device)
    all_reduce(counts)
    for total_sum in accumulator.sums.values():
        all_reduce(total_sum)
    num_batches = int(counts[0].item())
    if num_batches == 0:
        raise RuntimeError(f'the Fisher pass saw no batch: {source} is '
                           'empty (check the split file and max_samples)')
    if counts[2].item() > 0:
        where = '; '.join(f'batch {i}: loss {v} (images {paths})'
                          for i, v, paths in non_finite[:3]) or 'other ranks'
        raise RuntimeError(
            f'the Fisher pass over {source} met {int(counts[2].item())} '
            f'batches whose loss is not finite ({where}); the scores would '
            'be NaN. Check the weights (load_from / init_cfg) and the data')
    scores = {n: s / num_batches for n, s in accumulator.sums.items()}
    if all(not torch.any(s) for s in scores.values()):
        raise RuntimeError('every Fisher score is zero: no gradient reached '
                           'the scored parameters')
    stats = dict(num_batches=num_batches, num_samples=int(counts[1].item()),
                 seconds=round(time.time() - start, 2))
    return scores, stats


def build_fisher_dataloader(cfg, **kwargs):
    """Build the dataloader of :func:`fisher_dataloader_cfg`."""
    return Runner.build_dataloader(fisher_dataloader_cfg(cfg, **kwargs),
                                   seed=None, diff_rank_seed=False)
