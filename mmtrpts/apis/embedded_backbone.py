"""Pre-train the embedded backbone on the generated source task.

The demo and the tests need a pre-trained ViT without any download, so the
project makes one: the backbone described by a config's ``model.backbone``
(a tiny ``VisionTransformer``) is trained from scratch on the procedural
``shapes`` task (:data:`SOURCE_TASK`) with two throw-away linear heads
(object identity, object position) and a term that draws every block's
[CLS] attention to the object (docs/demo.md §2), in data-parallel spawned
processes, and saved as a state-dict-only checkpoint of plain
``VisionTransformer`` keys with the ``backbone.`` prefix, the same format as
the converted Google checkpoints, so configs load it with
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.

The result is cached: a checkpoint whose recorded recipe equals the requested
one is reused.
"""
import copy
import hashlib
import json
import math
import os
import os.path as osp
import tempfile
import time
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from mmengine.logging import print_log
from tqdm import tqdm

from ..datasets.synthetic.tasks import SOURCE_TASK, generate, position_labels
from ..efficiency.common import quiet_logs
from ..models.backbones.token_keep_fuse_vit import TokenKeepFuseViT
from ..visualization.token_selection import patch_object_coverage

DEFAULT_RECIPE = dict(
    num_train=8000, num_val=1000, epochs=4, batch_size=64, lr=2e-3,
    weight_decay=0.05, warmup_iters=40, position_grid=8,
    attention_weight=0.5, workers=2, num_threads=1,
    seed=0, generator_version=2)


def _recipe_hash(backbone_cfg: dict, recipe: dict) -> str:
    text = json.dumps(dict(backbone=backbone_cfg, recipe=recipe),
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _to_input(images) -> torch.Tensor:
    """uint8 NHWC RGB -> float NCHW normalised with mean = std = 127.5."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 127.5


@torch.no_grad()
def _accuracy(backbone, heads, images, labels, batch_size) -> List[float]:
    """Top-1 of every head on its labels."""
    backbone.eval()
    correct = [0] * len(heads)
    for i in range(0, len(images), batch_size):
        feats = backbone(_to_input(images[i:i + batch_size]))[-1]
        for k, (head, head_labels) in enumerate(zip(heads, labels)):
            correct[k] += (head(feats).argmax(1) == torch.from_numpy(
                head_labels[i:i + batch_size])).sum().item()
    backbone.train()
    return [c / len(images) for c in correct]


def object_share_per_patch(masks: np.ndarray,
                           grid: Tuple[int, int]) -> np.ndarray:
    """Per image, each patch's share of the object pixels (rows sum to 1):
    the target of the [CLS]-attention term.

    Args:
        masks (np.ndarray): ``bool [N, H, W]`` object masks, none empty.
        grid (tuple): The patch grid ``(h, w)``; it must divide ``(H, W)``.

    Returns:
        np.ndarray: ``float32 [N, h * w]`` over the row-major patch grid.
    """
    num, height, width = masks.shape
    # pixel fractions k / (ph * pw) are exact in float32; dividing there
    # gives the correctly rounded k / K of the object's pixel counts
    coverage = patch_object_coverage(
        masks, (height // grid[0], width // grid[1])).reshape(
            num, -1).astype(np.float32)
    return coverage / coverage.sum(axis=1, keepdims=True)


def _source_split(num: int, seed: int, grid: int):
    """Images and the two label sets (identity, position) of the source."""
    images, identity, masks = generate(SOURCE_TASK, num, seed,
                                       return_masks=True)
    return images, (identity, position_labels(masks, grid)), masks


def pretrain_backbone(backbone_cfg: dict, out_file: str,
                      recipe: Optional[dict] = None,
                      progress: bool = True) -> str:
    """Pre-train (or reuse) the embedded backbone checkpoint.

    Args:
        backbone_cfg (dict): An mmpretrain backbone config, e.g. the
            ``model.backbone`` of ``configs/_base_/models/vit-tiny-p4_32px.py``
            (its ``init_cfg`` is ignored).
        out_file (str): Where to write the checkpoint.
        recipe (dict, optional): Overrides of :data:`DEFAULT_RECIPE`.
        progress (bool): Show a progress bar.

    Returns:
        str: ``out_file``.
    """
    backbone_cfg = copy.deepcopy(dict(backbone_cfg))
    backbone_cfg.pop('init_cfg', None)
    recipe = dict(DEFAULT_RECIPE, **(recipe or {}))
    out_file = osp.abspath(out_file)
    key = _recipe_hash(backbone_cfg, recipe)
    start = time.time()
    if osp.isfile(out_file):
        meta = torch.load(out_file, map_location='cpu',
                          weights_only=True).get('meta', {})
        if meta.get('recipe_hash') == key:
            print_log(f'Reusing the pre-trained embedded backbone {out_file} '
                      f'(source top-1 {meta["source_val_top1"]:.3f})',
                      logger='current')
            return out_file

    with tempfile.TemporaryDirectory() as tmp_dir:
        result_file = osp.join(tmp_dir, 'result.pth')
        torch.multiprocessing.spawn(
            _pretrain_rank,
            args=(osp.join(tmp_dir, 'rendezvous'), result_file,
                  backbone_cfg, recipe, progress),
            nprocs=recipe['workers'],
            join=True)
        result = torch.load(result_file, map_location='cpu',
                            weights_only=True)
    top1 = result['top1']
    state_dict = {f'backbone.{k}': v
                  for k, v in result['state_dict'].items()
                  if k != 'keep_layer_mask'}
    meta = dict(recipe_hash=key, recipe=recipe, backbone=json.dumps(
        backbone_cfg, sort_keys=True, default=str),
        source_task=SOURCE_TASK.name, source_val_top1=top1[0],
        source_val_position_top1=top1[1],
        seconds=round(time.time() - start, 1))
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    tmp_file = out_file + '.tmp'
    torch.save(dict(meta=meta, state_dict=state_dict), tmp_file)
    os.replace(tmp_file, out_file)
    print_log(f'Pre-trained the embedded backbone in {meta["seconds"]} s: '
              f'source top-1 {top1[0]:.3f} (object), {top1[1]:.3f} '
              f'(position) -> {out_file}', logger='current')
    return out_file


def _pretrain_rank(rank: int, rendezvous: str, result_file: str,
                   backbone_cfg: dict, recipe: dict, progress: bool) -> None:
    """One data-parallel rank of the pre-training (a spawned process).

    Every rank builds the same model and draws the same batches; rank
    ``r`` computes the loss of every ``r``-th image of a batch and the
    ranks average their gradients (gloo), so the result depends on the
    recipe's ``workers`` and ``num_threads`` only, not on the machine's
    load.  Rank 0 writes the weights and the validation top-1 of both
    heads to ``result_file``.
    """
    torch.set_num_threads(recipe['num_threads'])
    world_size = recipe['workers']
    dist.init_process_group('gloo', init_method=f'file://{rendezvous}',
                            rank=rank, world_size=world_size)
    try:
        backbone, top1 = _pretrain(backbone_cfg, recipe,
                                   progress and rank == 0, rank, world_size)
        if rank == 0:
            torch.save(dict(state_dict=backbone.state_dict(), top1=top1),
                       result_file)
    finally:
        dist.destroy_process_group()


def _average_gradients(params: List[torch.Tensor], world_size: int) -> None:
    """All-reduce the gradients of ``params`` as one flat buffer."""
    grads = [p.grad for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def _pretrain(backbone_cfg: dict, recipe: dict, progress: bool, rank: int,
              world_size: int) -> Tuple[torch.nn.Module, List[float]]:
    """Train the backbone with its two source heads; returns it and the
    validation top-1 of both heads."""
    torch.manual_seed(recipe['seed'])
    vit_args = {k: v for k, v in backbone_cfg.items() if k != 'type'}
    backbone = TokenKeepFuseViT(**vit_args)
    with quiet_logs():  # mmengine logs one line per tensor
        backbone.init_weights()
    grid = recipe['position_grid']
    heads = torch.nn.ModuleList([
        torch.nn.Linear(backbone.embed_dims, SOURCE_TASK.num_classes),
        torch.nn.Linear(backbone.embed_dims, grid * grid)
    ])
    images, labels, masks = _source_split(recipe['num_train'],
                                          recipe['seed'], grid)
    coverage = object_share_per_patch(masks, backbone.patch_resolution)
    params = list(backbone.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=recipe['lr'],
                                  weight_decay=recipe['weight_decay'])
    steps_per_epoch = len(images) // recipe['batch_size']
    total = steps_per_epoch * recipe['epochs']
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: min(1.0, (it + 1) / recipe['warmup_iters']) *
        0.5 * (1 + math.cos(math.pi * it / total)))
    generator = torch.Generator().manual_seed(recipe['seed'])
    backbone.train()
    bar = tqdm(total=total, desc='pre-training embedded ViT',
               disable=not progress, unit='it', mininterval=1.0)
    for _ in range(recipe['epochs']):
        order = torch.randperm(len(images), generator=generator).numpy()
        for step in range(steps_per_epoch):
            idx = order[step * recipe['batch_size']:(step + 1) *
                        recipe['batch_size']][rank::world_size]
            outs, scores = backbone.forward_with_cls_attention(
                _to_input(images[idx]))
            loss = sum(
                F.cross_entropy(head(outs[-1]), torch.from_numpy(y[idx]))
                for head, y in zip(heads, labels))
            target = torch.from_numpy(coverage[idx])
            loss = loss + recipe['attention_weight'] * sum(
                -(target * s.clamp_min(1e-8).log()).sum(1).mean()
                for s in scores) / len(scores)
            optimizer.zero_grad()
            loss.backward()
            if world_size > 1:
                _average_gradients(params, world_size)
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f'{loss.item():.3f}')
    bar.close()
    if rank != 0:  # only rank 0 scores and saves
        return backbone, []
    val_images, val_labels, _ = _source_split(recipe['num_val'],
                                              recipe['seed'] + 1, grid)
    return backbone, _accuracy(backbone, heads, val_images, val_labels,
                               recipe['batch_size'])
