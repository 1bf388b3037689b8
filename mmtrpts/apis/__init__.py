from .model_zoo import register_model_zoo
from .run_config import (apply_loader_flags, apply_train_flags,
                         resolve_work_dir)
from .task_config import set_task

__all__ = [
    'apply_loader_flags', 'apply_train_flags', 'register_model_zoo',
    'resolve_work_dir', 'set_task'
]
