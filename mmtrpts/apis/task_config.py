"""Point a benchmark config at one task."""
from typing import Optional

from mmengine.config import Config

_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def set_task(cfg: Config, task: str, num_classes: int,
             data_root: Optional[str] = None) -> None:
    """Set the task (and class count) of every dataloader and the model.

    Text configs cannot re-derive dicts from an overridden variable, so a
    sweep over tasks goes through this function instead of ``task = ...``.

    Args:
        cfg (Config): A config whose dataloaders use a dataset with a
            ``task`` argument (:class:`mmtrpts.datasets.VTAB1k`).
        task (str): Task folder name or alias.
        num_classes (int): Number of classes of the task.
        data_root (str, optional): New benchmark root.
    """
    for name in _LOADERS:
        loader = cfg.get(name)
        if loader is None:
            continue
        dataset = loader['dataset']
        if 'task' not in dataset:
            raise KeyError(f'{name}.dataset ({dataset.get("type")}) has no '
                           '`task` argument; set_task needs a VTAB1k-like '
                           'dataset')
        dataset['task'] = task
        dataset['num_classes'] = num_classes
        if data_root is not None:
            dataset['data_root'] = data_root
    cfg.model.head.num_classes = num_classes
    for holder in (cfg, cfg.model):
        preprocessor = holder.get('data_preprocessor')
        if preprocessor is not None and 'num_classes' in preprocessor:
            preprocessor['num_classes'] = num_classes
