"""Generated data in the real layouts: the mini-VTAB benchmark and the
embedded backbone's source task (the demo's data and the tests' fixtures).
"""
from .mini_vtab import load_object_masks, write_benchmark, write_task
from .tasks import SOURCE_TASK, TARGET_TASKS, generate

__all__ = [
    'SOURCE_TASK', 'TARGET_TASKS', 'generate', 'load_object_masks',
    'write_benchmark', 'write_task'
]
