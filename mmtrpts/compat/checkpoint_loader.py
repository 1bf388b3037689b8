"""Load full runner checkpoints with mmengine 0.10.x under torch >= 2.6.

torch 2.6 switched ``torch.load`` to ``weights_only=True``.  mmengine 0.10.7
does not pass the argument, so resuming (or ``load_from`` with) a checkpoint
that holds a ``HistoryBuffer``, numpy scalars and optimizer state fails with
``Unsupported global``.  mmengine fixed this upstream (open-mmlab/mmengine
PR #1650, issue #1655) by loading its own checkpoints with
``weights_only=False``; we apply the same change to mmengine's *local*
checkpoint loader only.  ``torch.load`` itself keeps its safe default for
every other caller in the process (no global allow-list of ``getattr``).

This is the one place where mmtrpts replaces an existing registration
(``force=True``): the scheme ``''`` is mmengine's local-file loader, there is
no other way to change it, and the replacement is behaviour-identical to the
upstream fix.  It is skipped when mmengine already ships the fix.
"""
import torch
from mmengine.runner.checkpoint import CheckpointLoader
from mmengine.utils import digit_version
import mmengine

# The last mmengine release whose local loader lacks ``weights_only=False``.
_LAST_UNFIXED_MMENGINE = '0.10.7'


def load_local_checkpoint(filename: str, map_location=None) -> dict:
    """mmengine's local loader with the upstream ``weights_only`` fix.

    Args:
        filename (str): Path of the checkpoint file.
        map_location (str, optional): Same as :func:`torch.load`.

    Returns:
        dict: The loaded checkpoint.
    """
    import os.path as osp
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


def needs_patch() -> bool:
    """Whether the installed stack needs the loader fix."""
    return (digit_version(torch.__version__) >= digit_version('2.6.0')
            and digit_version(mmengine.__version__) <= digit_version(
                _LAST_UNFIXED_MMENGINE))


def patch_mmengine_checkpoint_loader() -> bool:
    """Register :func:`load_local_checkpoint` as mmengine's local loader.

    Returns:
        bool: True if the loader was replaced.
    """
    if not needs_patch():
        return False
    if CheckpointLoader._schemes.get('') is load_local_checkpoint:
        return False
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_local_checkpoint, force=True)
    return True
