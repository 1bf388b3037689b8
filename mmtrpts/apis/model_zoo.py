"""Register the project's model zoo with mmpretrain's ``get_model``.

``model-index.yml`` at the repository root imports the metafiles of the
benchmark configs (``configs/<method>/metafile.yml``).  After
:func:`register_model_zoo` (called by ``import mmtrpts``), their names work
with mmpretrain's API, offline, with a local (delta) checkpoint::

    import mmtrpts
    from mmpretrain import get_model, list_models
    list_models('trpts_*')
    model = get_model('trpts_vit-b_cub', pretrained='cub_delta.pth')

Published entries (``tools/misc/publish_zoo.py``) carry ``Weights:
mmtrpts-zoo://<file>``; ``get_model(name, pretrained=True)`` then reads the
file from the local zoo folder after checking its hash
(:mod:`mmtrpts.checkpoints.zoo`), merges the delta with its base and
restores the token-selection blocks.  A zoo folder with its own
``model-index.yml`` (runs that no repository metafile lists) is registered
with :func:`register_model_zoo`, or at import when ``$MMTRPTS_ZOO`` names
it::

    register_model_zoo('zoo/model-index.yml')
    model = get_model('embedded_vit-tiny_trpts_mini-vtab-location',
                      pretrained=True)

The configs are files of the source checkout (the documented editable
install); an installation without them has no model index to register.
"""
import os.path as osp
from typing import List, Optional

from ..checkpoints.zoo import add_zoo_dir, env_zoo_dirs

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

    An explicitly given index's folder also becomes the first zoo folder
    searched for ``mmtrpts-zoo://`` files.

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
    if model_index is not None:
        add_zoo_dir(osp.dirname(path))
    ModelHub.register_model_index(path, config_prefix=osp.dirname(path))
    _registered.add(path)
    return True


def register_env_zoos() -> List[str]:
    """Register the ``model-index.yml`` of every ``$MMTRPTS_ZOO`` folder.

    Returns:
        list[str]: The indexes registered (folders without one hold only
        files of repository metafile entries and are skipped).
    """
    found = []
    for folder in env_zoo_dirs():
        index = osp.join(folder, 'model-index.yml')
        if osp.isfile(index):
            register_model_zoo(index)
            found.append(index)
    return found
