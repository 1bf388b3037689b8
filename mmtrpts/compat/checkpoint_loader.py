"""mmengine's local checkpoint loader, replaced: safe loads and deltas.

1. **Loading never executes code from a file.**  mmengine 0.10.7 calls
   ``torch.load`` without ``weights_only``; on torch >= 2.6 that refuses
   runner checkpoints (``HistoryBuffer``, numpy scalars), and mmengine's
   upstream fix (open-mmlab/mmengine PR #1650) loads every file with
   ``weights_only=False``, which runs whatever a downloaded ``.pth``
   pickles.  This loader reads every local file through
   :func:`mmtrpts.checkpoints.io.load_checkpoint_file`: ``weights_only=True``
   plus, for the length of the load, an allow-list of exactly the types
   MMEngine stores in its own checkpoints.  Full unpickling only for files
   the user names as trusted (``MMTRPTS_TRUSTED_CHECKPOINTS`` or
   ``--trust-checkpoint``).
2. **Delta checkpoints.**  ``tools/model_converters/export_delta.py``
   writes a masked run as a sparse delta against its pretrained base
   (:mod:`mmtrpts.checkpoints.delta`).  After loading a file, the loader
   recognises ``meta.format == 'mmtrpts.delta'``, loads the base named in
   ``meta.base_checkpoint`` and returns ``{'meta': ..., 'state_dict':
   merged}``, so a delta works wherever mmengine loads a local file:
   ``load_from=DELTA``, ``init_cfg=dict(type='Pretrained',
   checkpoint=DELTA)``, ``mmpretrain.apis.get_model(cfg, pretrained=DELTA)``.

3. **Zoo references.**  ``mmtrpts-zoo://<file>`` in a metafile's
   ``Weights`` is read from the local zoo folder after a hash check
   (:mod:`mmtrpts.checkpoints.zoo`), so ``get_model(name, pretrained=True)``
   works offline.

This is the one place where mmtrpts replaces an existing registration
(``force=True``): the scheme ``''`` is mmengine's local-file loader and
there is no other way to change it.  Remote schemes (``http://``,
``s3://``, ...) keep mmengine's loaders (which use torch's default,
``weights_only=True``).
"""
import os
import os.path as osp

from mmengine.runner.checkpoint import CheckpointLoader

from ..checkpoints.delta import is_delta
from ..checkpoints.io import load_checkpoint_file
from ..checkpoints.merge import merge_checkpoint
from ..checkpoints.zoo import ZOO_SCHEME, resolve_zoo_file

_MERGE_TOOL = 'tools/model_converters/merge.py delta'


def resolve_base_path(base: str, delta_path: str) -> str:
    """Find a delta's base checkpoint on disk.

    Args:
        base (str): ``meta.base_checkpoint`` of the delta.
        delta_path (str): Path of the delta file.

    Returns:
        str: ``base`` if absolute, else relative to the current directory,
        else relative to the delta file's folder.

    Raises:
        FileNotFoundError: naming the path and how to fix it.
    """
    hint = (f'; merge the delta into a dense checkpoint with {_MERGE_TOOL} '
            'DELTA OUT --base BASE, or re-export it with --base-path-in-meta')
    if not base:
        raise FileNotFoundError(
            f'delta checkpoint {delta_path} names no base checkpoint '
            f'(meta.base_checkpoint is empty){hint}')
    base = osp.expanduser(base)
    candidates = [base] if osp.isabs(base) else [
        base, osp.join(osp.dirname(osp.abspath(delta_path)), base)
    ]
    for path in candidates:
        if osp.isfile(path):
            return path
    raise FileNotFoundError(
        f'base checkpoint {base!r} of delta checkpoint {delta_path} not '
        f'found (looked at {", ".join(map(repr, candidates))}, from '
        f'{os.getcwd()}){hint}')


def merge_delta_checkpoint(delta: dict,
                           delta_path: str,
                           map_location=None) -> dict:
    """Load a delta's base and return the merged dense checkpoint.

    Args:
        delta (dict): A loaded delta checkpoint.
        delta_path (str): Its path (to resolve a relative base path).
        map_location (str, optional): Same as :func:`torch.load`.

    Returns:
        dict: ``{'meta': ..., 'state_dict': merged state dict}`` of
        :func:`~mmtrpts.checkpoints.merge.merge_checkpoint`.
    """
    base_path = resolve_base_path(delta['meta'].get('base_checkpoint'),
                                  delta_path)
    base = load_checkpoint_file(base_path, map_location)
    return merge_checkpoint('delta', delta, delta_path, base=base,
                            base_source=base_path)


def load_from_local(filename: str, map_location=None) -> dict:
    """mmengine's local loader: safe loads, with delta support.

    Args:
        filename (str): Path of the checkpoint file.
        map_location (str, optional): Same as :func:`torch.load`.

    Returns:
        dict: The loaded checkpoint; a delta comes back merged with its base
        as ``{'meta': ..., 'state_dict': ...}``.
    """
    checkpoint = load_checkpoint_file(filename, map_location)
    if is_delta(checkpoint):
        return merge_delta_checkpoint(checkpoint, osp.expanduser(filename),
                                      map_location)
    return checkpoint


def load_from_zoo(filename: str, map_location=None) -> dict:
    """Load ``mmtrpts-zoo://<file>`` from the local zoo, hash checked.

    The file is found and verified by
    :func:`~mmtrpts.checkpoints.zoo.resolve_zoo_file` (its sha256 must start
    with the 8 digits in its name), then read like a local file: safely,
    and a delta merged with its base.
    """
    return load_from_local(resolve_zoo_file(filename), map_location)


def patch_mmengine_checkpoint_loader() -> bool:
    """Register :func:`load_from_local` as mmengine's local loader.

    Also registers :func:`load_from_zoo` for the new scheme
    ``mmtrpts-zoo://`` (a new prefix: no existing loader is replaced).

    Returns:
        bool: True if the loader was replaced now, False if it already was.
    """
    if ZOO_SCHEME not in CheckpointLoader._schemes:
        CheckpointLoader.register_scheme(
            prefixes=ZOO_SCHEME, loader=load_from_zoo)
    if CheckpointLoader._schemes.get('') is load_from_local:
        return False
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)
    return True
