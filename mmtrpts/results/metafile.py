"""Model-zoo metadata of benchmark configs (MMPretrain metafile format).

:func:`metafile_entry` builds one ``Models`` entry of a ``metafile.yml``
from a config: the model is built (not initialised) to count its
parameters, and the backbone FLOPs (attention matmuls included, see
:func:`~mmtrpts.complexity.flops.count_flops`) are counted for the token
selection at the shallowest and at the deepest ``n`` blocks.  TR-PTS picks
its blocks after the Fisher pass (the parameter-sparsest ones), so a
config's FLOPs lie between the two; the entry's ``FLOPs`` is the upper
bound and ``FLOPs range`` both.  Entries carry no ``Results`` and no
``Weights``: those are added by hand from real runs only.
"""
import os.path as osp
from typing import Dict, List

import torch
from mmengine.config import Config

from ..complexity.flops import count_flops


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
        ``Parameters``, ``Trainable budget``, ``Training Data``), ``In
        Collection`` and ``Config``.
    """
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(config)
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
    metadata['Training Data'] = training_data
    return {
        'Name': name,
        'Metadata': metadata,
        'In Collection': collection,
        'Config': osp.relpath(config, config_root),
    }
