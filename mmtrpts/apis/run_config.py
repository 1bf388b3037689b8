"""Config adjustments shared by ``tools/train.py`` and ``tools/test.py``.

They mirror the command-line flags of MMPretrain's own tools, so a user's
muscle memory carries over.
"""
import copy
import os.path as osp
from typing import Optional

from mmengine.config import Config


def _dataloaders(cfg: Config):
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if loader is not None:
            yield loader


def apply_loader_flags(cfg: Config, no_pin_memory: bool = False,
                       no_persistent_workers: bool = False) -> None:
    """Apply ``--no-pin-memory`` / ``--no-persistent-workers``.

    ``persistent_workers=True`` with ``num_workers=0`` makes PyTorch raise;
    it is switched off for such loaders (nothing else changes).
    """
    for loader in _dataloaders(cfg):
        if no_pin_memory:
            loader['pin_memory'] = False
        if no_persistent_workers or loader.get('num_workers', 0) == 0:
            loader['persistent_workers'] = False


def resolve_work_dir(cfg: Config, config_file: str,
                     work_dir: Optional[str]) -> None:
    """CLI ``--work-dir`` > config ``work_dir`` > ``./work_dirs/<name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_file))[0])


def apply_train_flags(cfg: Config, resume: Optional[str] = None,
                      amp: bool = False, no_validate: bool = False,
                      auto_scale_lr: bool = False) -> None:
    """Apply ``--resume [PATH]``, ``--amp``, ``--no-validate`` and
    ``--auto-scale-lr`` the way MMPretrain's ``tools/train.py`` does."""
    if amp:
        wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper_type not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise ValueError(
                f'--amp needs optim_wrapper.type OptimWrapper or '
                f'AmpOptimWrapper, got {wrapper_type!r}; set AMP in the '
                'config instead.')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        cfg.resume = True
        cfg.load_from = resume
    if no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if auto_scale_lr:
        if cfg.get('auto_scale_lr') is None or \
                'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs `auto_scale_lr = dict('
                             'base_batch_size=...)` in the config')
        cfg.auto_scale_lr.enable = True


def runner_model_cfg(cfg: Config) -> Config:
    """``cfg.model`` as MMEngine's runner builds it.

    The runner gives the model the config's top-level ``data_preprocessor``
    (mean / std, RGB order, class count) unless the model sets its own;
    a tool that builds ``cfg.model`` directly must do the same, or its
    forward sees unnormalised images.
    """
    model_cfg = copy.deepcopy(cfg.model)
    if model_cfg.get('data_preprocessor') is None and \
            cfg.get('data_preprocessor') is not None:
        model_cfg['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    return model_cfg
