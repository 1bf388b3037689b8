"""mmtrpts: task-relevant parameter and token selection for MMPretrain.

Importing the package applies the host-stack fixes (``mmtrpts.compat``),
checks the supported mmpretrain/mmengine/mmcv versions, registers all
components into MMPretrain's registries and the model zoo
(``model-index.yml``) with ``mmpretrain.get_model``.  Configs load it with::

    custom_imports = dict(imports=['mmtrpts'], allow_failed_imports=False)
"""
from . import compat  # noqa: F401  (must come first: torchvision shim)
from .compat.stack_check import check_stack
from .version import __version__

check_stack()

from . import datasets, engine, models  # noqa: E402,F401
from .apis import register_env_zoos, register_model_zoo  # noqa: E402

register_model_zoo()
register_env_zoos()

__all__ = ['__version__']
