"""Fixes for the host stack, applied on ``import mmtrpts``.

See ``docs/design/runner_order.md`` §8 and the README section "Stack fixes".
"""
from .torchvision_ops import ensure_torchvision_op_schemas

# Must run before anything imports torchvision (mmengine.runner does not).
ensure_torchvision_op_schemas()

from .checkpoint_loader import patch_mmengine_checkpoint_loader  # noqa: E402
from .cpu_dist import (setup_cpu_distributed,  # noqa: E402
                       shutdown_distributed)

patch_mmengine_checkpoint_loader()

__all__ = [
    'ensure_torchvision_op_schemas', 'patch_mmengine_checkpoint_loader',
    'setup_cpu_distributed', 'shutdown_distributed'
]
