"""Checkpoint formats of mmtrpts (pure torch): sparse delta checkpoints."""
from .delta import (DELTA_FORMAT, DELTA_VERSION, apply_delta, check_plain,
                    delta_size_report, is_delta, make_delta, merged_meta)

__all__ = [
    'DELTA_FORMAT', 'DELTA_VERSION', 'apply_delta', 'check_plain',
    'delta_size_report', 'is_delta', 'make_delta', 'merged_meta'
]
