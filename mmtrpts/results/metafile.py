"""Model-zoo metadata of benchmark configs (MMPretrain metafile format).

:func:`metafile_entry` builds one ``Models`` entry of a ``metafile.yml``
from a config: the model is built (not initialised) to count its
parameters, and the backbone FLOPs (attention matmuls included, see
:func:`~mmtrpts.complexity.flops.count_flops`) are counted for the token
selection at the shallowest and at the deepest ``n`` blocks.  TR-PTS picks
its blocks after the Fisher pass (the parameter-sparsest ones), so a
config's FLOPs lie between the two; the entry's ``FLOPs`` is the upper
bound and ``FLOPs range`` both.  Entries carry no ``Results`` and no
``Weights``: ``tools/misc/publish_zoo.py`` adds them from finished runs
(:mod:`.zoo`), and :func:`keep_published` carries them over when a metafile
is generated again.
"""
import os.path as osp
from typing import Dict, List

import torch
from mmengine.config import Config

from ..complexity.flops import count_flops
from ..models.backbones.spt_vit import plain_vit_cfg


#: Metadata keys the zoo publisher writes (kept on regeneration).
PUBLISHED_METADATA = ('Base checkpoint', 'Trainable parameters',
                      'Token selection blocks', 'Training overrides')


def model_name(config: str) -> str:
    """``<config folder>_<config name>``: a config's model-zoo name.

    E.g. ``configs/trpts/vit-b_cub.py`` -> ``trpts_vit-b_cub``.
    """
    folder = osp.basename(osp.dirname(osp.abspath(config)))
    return f'{folder}_{osp.splitext(osp.basename(config))[0]}'


def keep_published(entries: List[Dict], previous: List[Dict]) -> List[Dict]:
    """Carry ``Results``, ``Weights`` and the published metadata over.

    Args:
        entries (list[dict]): Freshly generated ``Models`` entries.
        previous (list[dict]): The entries of the metafile being replaced.

    Returns:
        list[dict]: ``entries``, each with what the publisher had added to
        the previous entry of its name.
    """
    old = {m['Name']: m for m in previous}
    for entry in entries:
        before = old.get(entry['Name'])
        if not before:
            continue
        for key in PUBLISHED_METADATA:
            if key in (before.get('Metadata') or {}):
                entry['Metadata'][key] = before['Metadata'][key]
        for key in ('Results', 'Weights'):
            if key in before:
                entry[key] = before[key]
    return entries


def _placement_flops(model: torch.nn.Module, num_blocks: int,
                     image_size: int) -> List[int]:
    """Backbone FLOPs with selection in the first / last ``num_blocks``."""
    backbone = model.backbone
    depth = backbone.num_layers
    flops = []
    for blocks in (range(num_blocks), range(depth - num_blocks, depth)):
        backbone.set_keep_layers(list(blocks))
        flops.append(count_flops(model, (3, image_size, image_size),
                                 backbone_only=True))
    backbone.set_keep_layers([])
    return flops


def metafile_entry(config: str, name: str, collection: str,
                   training_data: str, config_root: str) -> Dict:
    """One ``Models`` entry of an MMPretrain ``metafile.yml``.

    Args:
        config (str): The config file.
        name (str): The model name (``get_model(name)``).
        collection (str): ``In Collection`` of the entry.
        training_data (str): The data set the config fine-tunes on.
        config_root (str): ``Config`` paths are written relative to it.

    Returns:
        dict: ``Name``, ``Metadata`` (``FLOPs``, ``FLOPs range``,
        ``Parameters``, ``Trainable budget`` (a fraction; SPT: ``Trainable
        budget (M)``, parameters before its allocation), ``Training
        Data``), ``In Collection`` and ``Config``.
    """
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(config)
    spt = 'sensitivity_file' in cfg.model.backbone
    if spt:
        # SPT's LoRA / Adapter modules follow its allocation file, written by
        # the sensitivity pass (stage 1) on the data: before it, count the
        # plain ViT it extends (the budget says how many SPT adds).
        cfg.model.backbone = plain_vit_cfg(cfg.model.backbone)
    model = MODELS.build(cfg.model).eval()
    hooks = [h for h in cfg.get('custom_hooks', [])
             if h.get('type') == 'FisherSelectionHook']
    metadata = dict(Parameters=sum(p.numel() for p in model.parameters()))
    if hooks and hooks[0].get('token_placement'):
        low, high = _placement_flops(
            model, hooks[0]['token_placement'].get('num_blocks', 3),
            cfg.model.backbone.get('img_size', 224))
        metadata.update(FLOPs=high, **{'FLOPs range': [low, high]})
    else:
        image = cfg.model.backbone.get('img_size', 224)
        metadata['FLOPs'] = count_flops(model, (3, image, image),
                                        backbone_only=True)
    if hooks and hooks[0].get('target_ratio') is not None:
        metadata['Trainable budget'] = float(hooks[0]['target_ratio'])
    if hooks and hooks[0].get('rule') == 'gps':
        metadata['Connections per neuron (K)'] = int(hooks[0]['k'])
    if spt:
        metadata['Trainable budget (M)'] = float(cfg.sensitivity_cfg.budget)
    metadata['Training Data'] = training_data
    return {
        'Name': name,
        'Metadata': metadata,
        'In Collection': collection,
        'Config': osp.relpath(config, config_root),
    }
