"""TR-PTS parameter selection outside a training run (offline pass).

:func:`compute_selection` runs the selection a config's
``FisherSelectionHook`` would run in ``before_train`` -- the same
:class:`~mmtrpts.engine.ParameterSelection`, built from the same settings
-- on the config's model with its pretrained weights, and writes the
record that the hook loads through ``selection_file=``.
"""
import os.path as osp
from typing import Optional

from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import load_checkpoint
from mmpretrain.registry import MODELS

from ..engine import ParameterSelection, save_selection
from ..engine.hooks.fisher_selection_hook import HOOK_ARGS
from ..selection.eligibility import assign_roles
from ..selection.record import validate_record
from .run_config import runner_model_cfg


def selection_settings(cfg: Config, source: str = 'the config') -> dict:
    """The selection settings of the config's ``FisherSelectionHook``.

    Raises:
        KeyError: If the config has no such hook, or more than one.
    """
    hooks = [
        h for h in cfg.get('custom_hooks', [])
        if h.get('type') == 'FisherSelectionHook'
    ]
    if len(hooks) != 1:
        raise KeyError(f'{source} must have exactly one '
                       "dict(type='FisherSelectionHook') in custom_hooks, "
                       f'found {len(hooks)}')
    return {
        k: v
        for k, v in hooks[0].items() if k != 'type' and k not in HOOK_ARGS
    }


def compute_selection(cfg: Config,
                      out_dir: Optional[str] = None,
                      device: str = 'cpu',
                      plot: bool = True) -> dict:
    """Build the config's model, run its selection, write the record.

    Args:
        cfg (Config): A config with a ``FisherSelectionHook``.
        out_dir (str, optional): Where ``selection.pth``, ``selection.json``
            and ``selection_density.png`` go (default:
            ``work_dirs/<config name>/selection``).
        device (str): Device of the pass.
        plot (bool): Draw the density plot.

    Returns:
        dict: ``record`` (the selection record) and ``paths`` (the files
        written).
    """
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    source = cfg.filename or 'the config'
    selection = ParameterSelection(**selection_settings(cfg, source))
    model = MODELS.build(runner_model_cfg(cfg))
    model.init_weights()  # loads the pretrained backbone (init_cfg)
    if cfg.get('load_from'):
        load_checkpoint(model, cfg.load_from, map_location='cpu')
    model.to(device)
    roles = assign_roles(model, cfg.optim_wrapper.get('eligibility'))
    record = selection.run(cfg, model, roles)
    validate_record(record, {n: p.shape for n, p in model.named_parameters()})
    if out_dir is None:
        name = osp.splitext(osp.basename(source))[0]
        out_dir = osp.join('work_dirs', name, 'selection')
    paths = save_selection(record, out_dir, plot=plot)
    return dict(record=record, paths=paths)
