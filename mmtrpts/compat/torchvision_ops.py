"""Make a torchvision whose C++ extension cannot load importable.

The only torchvision 0.28 wheel is a CUDA build.  Next to a CPU torch its
``_C`` extension fails to load, which torchvision tolerates, but its
``_meta_registrations`` module still registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms``; these need the operator
schemas that only the extension defines, so ``import torchvision`` (and with
it ``import mmpretrain.models``) fails with
``RuntimeError: operator torchvision::nms does not exist``.

The fix (``docs/design/runner_order.md`` §8, option b): before torchvision is
imported, try to load its extension exactly as torchvision would.  Only if
that fails, define the two schemas in a ``torchvision`` library fragment so
that the fake-kernel registrations find them.  Python-level torchvision then
works and the C++ ops raise if called; the classification path never calls
them.  On a machine with matching wheels the extension loads, the schemas
come from it and this module changes nothing.
"""
import glob
import importlib.util
import os.path as osp
import sys
from typing import Optional

import torch

# Schemas as defined by torchvision's csrc/ops/nms.cpp and quantized nms.
_SCHEMAS = (
    'nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
    'qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
)
# The fragment must outlive this module's functions: dropping the last
# reference to a ``torch.library.Library`` deregisters its definitions.
_FRAGMENT: Optional[torch.library.Library] = None


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _extension_loads() -> bool:
    """Try to load torchvision's ``_C`` extension without importing it."""
    spec = importlib.util.find_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision: nothing to fix
    for folder in spec.submodule_search_locations:
        for lib in sorted(glob.glob(osp.join(folder, '_C*'))):
            try:
                torch.ops.load_library(lib)
                return True
            except (ImportError, OSError, RuntimeError):
                return False
    return False


def ensure_torchvision_op_schemas() -> bool:
    """Define the ``nms``/``qnms`` schemas when torchvision cannot.

    Returns:
        bool: True if the schemas were defined by this call.
    """
    global _FRAGMENT
    if 'torchvision' in sys.modules or _FRAGMENT is not None:
        return False
    if _op_exists('nms') or _extension_loads():
        return False
    fragment = torch.library.Library('torchvision', 'FRAGMENT')
    for schema in _SCHEMAS:
        if not _op_exists(schema.split('(')[0]):
            fragment.define(schema)
    _FRAGMENT = fragment
    return True
