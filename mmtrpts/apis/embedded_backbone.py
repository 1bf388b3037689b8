"""Pre-train the embedded backbone on the generated source task.

The demo and the tests need a pre-trained ViT without any download, so the
project makes one: the backbone described by a config's ``model.backbone``
(a tiny ``VisionTransformer``) is trained from scratch on the procedural
``shapes`` task (:data:`SOURCE_TASK`) with a throw-away linear head, and
saved as a state-dict-only checkpoint with ``backbone.``-prefixed keys, the
same format as the converted Google checkpoints, so configs load it with
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.

The result is cached: a checkpoint whose recorded recipe equals the requested
one is reused.
"""
import copy
import hashlib
import json
import logging
import os
import os.path as osp
import time
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger, print_log
from tqdm import tqdm

from ..datasets.synthetic.tasks import SOURCE_TASK, generate

DEFAULT_RECIPE = dict(
    num_train=8000, num_val=1000, epochs=5, batch_size=128, lr=2e-3,
    weight_decay=0.05, warmup_iters=60, seed=0, generator_version=1)


def _recipe_hash(backbone_cfg: dict, recipe: dict) -> str:
    text = json.dumps(dict(backbone=backbone_cfg, recipe=recipe),
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _to_input(images) -> torch.Tensor:
    """uint8 NHWC RGB -> float NCHW normalised with mean = std = 127.5."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 127.5


@torch.no_grad()
def _accuracy(backbone, head, images, labels, batch_size) -> float:
    backbone.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = head(backbone(_to_input(images[i:i + batch_size]))[-1])
        correct += (logits.argmax(1) == torch.from_numpy(
            labels[i:i + batch_size])).sum().item()
    backbone.train()
    return correct / len(images)


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
    from mmpretrain.registry import MODELS

    backbone_cfg = copy.deepcopy(dict(backbone_cfg))
    backbone_cfg.pop('init_cfg', None)
    recipe = dict(DEFAULT_RECIPE, **(recipe or {}))
    out_file = osp.abspath(out_file)
    key = _recipe_hash(backbone_cfg, recipe)
    if osp.isfile(out_file):
        meta = torch.load(out_file, map_location='cpu',
                          weights_only=True).get('meta', {})
        if meta.get('recipe_hash') == key:
            print_log(f'Reusing the pre-trained embedded backbone {out_file} '
                      f'(source top-1 {meta["source_val_top1"]:.3f})',
                      logger='current')
            return out_file

    torch.manual_seed(recipe['seed'])
    start = time.time()
    backbone = MODELS.build(backbone_cfg)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # mmengine prints one line per tensor
    try:
        backbone.init_weights()
    finally:
        logger.setLevel(level)
    dims = backbone.embed_dims
    head = torch.nn.Linear(dims, SOURCE_TASK.num_classes)
    images, labels = generate(SOURCE_TASK, recipe['num_train'],
                              recipe['seed'])
    val_images, val_labels = generate(SOURCE_TASK, recipe['num_val'],
                                      recipe['seed'] + 1)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=recipe['lr'],
                                  weight_decay=recipe['weight_decay'])
    steps_per_epoch = len(images) // recipe['batch_size']
    total = steps_per_epoch * recipe['epochs']
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: min(1.0, (it + 1) / recipe['warmup_iters']) *
        0.5 * (1 + torch.cos(torch.tensor(it / total * torch.pi)).item()))
    generator = torch.Generator().manual_seed(recipe['seed'])
    backbone.train()
    bar = tqdm(total=total, desc='pre-training embedded ViT',
               disable=not progress, unit='it', mininterval=1.0)
    for _ in range(recipe['epochs']):
        order = torch.randperm(len(images), generator=generator).numpy()
        for step in range(steps_per_epoch):
            idx = order[step * recipe['batch_size']:(step + 1) *
                        recipe['batch_size']]
            x = _to_input(images[idx])
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = F.cross_entropy(
                head(backbone(x)[-1]), torch.from_numpy(labels[idx]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f'{loss.item():.3f}')
    bar.close()
    top1 = _accuracy(backbone, head, val_images, val_labels,
                     recipe['batch_size'])
    state_dict = {f'backbone.{k}': v.detach().clone()
                  for k, v in backbone.state_dict().items()}
    meta = dict(recipe_hash=key, recipe=recipe, backbone=json.dumps(
        backbone_cfg, sort_keys=True, default=str),
        source_task=SOURCE_TASK.name, source_val_top1=top1,
        seconds=round(time.time() - start, 1))
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    tmp_file = out_file + '.tmp'
    torch.save(dict(meta=meta, state_dict=state_dict), tmp_file)
    os.replace(tmp_file, out_file)
    print_log(f'Pre-trained the embedded backbone in {meta["seconds"]} s: '
              f'source task top-1 {top1:.3f} -> {out_file}', logger='current')
    return out_file
