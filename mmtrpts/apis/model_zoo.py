"""Register the project's model zoo with mmpretrain's ``get_model``.

``model-index.yml`` at the repository root imports the metafiles of the
benchmark configs (``configs/trpts/metafile.yml``).  After
:func:`register_model_zoo` (called by ``import mmtrpts``), their names work
with mmpretrain's API, offline, with a local (delta) checkpoint::

    import mmtrpts
    from mmpretrain import get_model, list_models
    list_models('trpts_*')
    model = get_model('trpts_vit-b_cub', pretrained='cub_delta.pth')

The configs are files of the source checkout (the documented editable
install); an installation without them has no model index to register.
"""
import os.path as osp
from typing import Optional

#: The model index of a source checkout (``pip install -e .``).
MODEL_INDEX = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
    'model-index.yml')

_registered = set()


def register_model_zoo(model_index: Optional[str] = None) -> bool:
    """Register a model index with mmpretrain's ``ModelHub`` (once).

    Args:
        model_index (str, optional): The ``model-index.yml``; defaults to
            :data:`MODEL_INDEX`. Config paths in it are relative to its
            folder.

    Returns:
        bool: True if the index is registered (now or before), False if
        the default index does not exist (no source checkout).

    Raises:
        FileNotFoundError: An explicitly given ``model_index`` is missing.
    """
    from mmpretrain.apis import ModelHub
    path = osp.abspath(model_index or MODEL_INDEX)
    if path in _registered:
        return True
    if not osp.isfile(path):
        if model_index is not None:
            raise FileNotFoundError(f'model index not found: {path}')
        return False
    ModelHub.register_model_index(path, config_prefix=osp.dirname(path))
    _registered.add(path)
    return True
