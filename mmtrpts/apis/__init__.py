from .model_zoo import register_env_zoos, register_model_zoo
from .run_config import (apply_loader_flags, apply_train_flags,
                         resolve_work_dir)
from .selection import compute_selection, selection_settings
from .sensitivity import (SENSITIVITY_DEFAULTS, allocation_summary,
                          compute_sensitivity)
from .task_config import set_task
from .token_inspection import (TokenInspection, TokenInspectionError,
                               draw_inspection, draw_tokens_with_faithfulness,
                               inspect_tokens, token_faithfulness,
                               token_report)

__all__ = [
    'SENSITIVITY_DEFAULTS', 'TokenInspection', 'TokenInspectionError',
    'allocation_summary', 'apply_loader_flags', 'apply_train_flags',
    'compute_selection', 'compute_sensitivity', 'draw_inspection',
    'draw_tokens_with_faithfulness', 'inspect_tokens', 'register_env_zoos',
    'register_model_zoo',
    'resolve_work_dir', 'selection_settings', 'set_task', 'token_faithfulness',
    'token_report'
]
