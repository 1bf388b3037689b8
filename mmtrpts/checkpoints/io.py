"""Reading checkpoint files without executing code in them.

Every path through which mmtrpts reads a local checkpoint -- MMEngine's
local loader (``load_from``, ``--resume``, ``init_cfg=dict(type=
'Pretrained')``, ``get_model(..., pretrained=...)``, delta bases) and the
tools -- comes here.  Files are read with ``torch.load(weights_only=True)``:
tensors and plain python containers only, so a downloaded ``.pth`` whose
pickle would run a command is refused instead.

A runner checkpoint (``--resume``, or ``load_from`` with a full training
checkpoint) also holds what MMEngine itself stores: its log buffers
(``HistoryBuffer``, with numpy arrays and scalars) and ``OrderedDict``.
Those exact types are allow-listed, for the duration of one load; the one
``getattr`` such a pickle makes (a ``HistoryBuffer`` statistic) is served by
a restricted stand-in that allows nothing else.

Full unpickling happens only for a file the user names as trusted:
``MMTRPTS_TRUSTED_CHECKPOINTS=/path/a.pth:/path/b.pth`` in the environment,
``--trust-checkpoint FILE`` of ``tools/train.py`` / ``tools/test.py``, or
:func:`trust_checkpoint`.
"""
import codecs
import collections
import os
import os.path as osp
import pickle
import zipfile
from typing import Any, List, Set

import numpy as np
import torch

# The statistics every HistoryBuffer registers (custom ones are added by
# ``HistoryBuffer.register_statistics``).
_HISTORY_STATISTICS = ('min', 'max', 'current', 'mean')
#: Environment variable listing trusted checkpoint files (``os.pathsep``).
TRUST_ENV = 'MMTRPTS_TRUSTED_CHECKPOINTS'
_TRUSTED: Set[str] = set()
# numpy dtypes a log buffer or scalar may carry (no object / void dtypes).
_NUMPY_DTYPES = ('Bool', 'Int8', 'Int16', 'Int32', 'Int64', 'UInt8',
                 'UInt16', 'UInt32', 'UInt64', 'Float16', 'Float32',
                 'Float64', 'LongDouble', 'Str', 'Bytes', 'Long', 'ULong',
                 'LongLong', 'ULongLong', 'Int', 'UInt', 'Short', 'UShort',
                 'Byte', 'UByte')


class CheckpointLoadError(RuntimeError):
    """A checkpoint file could not be read (refused, corrupt or truncated).

    The message names the file and what was expected.
    """


def trust_checkpoint(path: str) -> None:
    """Allow full unpickling of one file the user trusts."""
    _TRUSTED.add(osp.realpath(osp.expanduser(path)))


def is_trusted(path: str) -> bool:
    """Whether ``path`` was named as trusted (API or environment)."""
    real = osp.realpath(osp.expanduser(path))
    listed = {osp.realpath(osp.expanduser(p))
              for p in os.environ.get(TRUST_ENV, '').split(os.pathsep) if p}
    return real in _TRUSTED or real in listed


def _history_buffer_attribute(owner: Any, name: str) -> Any:
    """The only ``getattr`` a runner checkpoint may make.

    MMEngine pickles the statistic methods of ``HistoryBuffer`` by name
    (``getattr(HistoryBuffer, 'mean')``); any other attribute access in a
    checkpoint is refused.
    """
    from mmengine.logging import HistoryBuffer
    statistics = set(_HISTORY_STATISTICS) | set(
        HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in statistics:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'getattr({owner!r}, {name!r}) is not allowed in a checkpoint')


def runner_safe_globals() -> List[Any]:
    """The types MMEngine stores in a runner checkpoint, for safe loads."""
    from mmengine.logging import HistoryBuffer
    from numpy._core.multiarray import _reconstruct, scalar
    allowed: List[Any] = [
        HistoryBuffer, collections.OrderedDict, codecs.encode, np.ndarray,
        np.dtype, _reconstruct, scalar,
        (_reconstruct, 'numpy.core.multiarray._reconstruct'),
        (scalar, 'numpy.core.multiarray.scalar'),
        (_history_buffer_attribute, 'builtins.getattr'),
        (_history_buffer_attribute, '__builtin__.getattr'),
    ]
    allowed += [getattr(np.dtypes, f'{n}DType') for n in _NUMPY_DTYPES
                if hasattr(np.dtypes, f'{n}DType')]
    return allowed


def load_checkpoint_file(filename: str, map_location=None) -> Any:
    """``torch.load`` a local file without executing code in it.

    Args:
        filename (str): Path of the checkpoint file.
        map_location: Same as :func:`torch.load`.

    Returns:
        The loaded object.  A delta checkpoint is returned as stored.

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointLoadError: If the pickle asks for anything beyond tensors,
            plain containers and MMEngine's own log types (naming the
            file, the refused global and how to trust the file), or if the
            file is corrupt or truncated.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if is_trusted(filename):
        return torch.load(filename, map_location=map_location,
                          weights_only=False)
    try:
        with torch.serialization.safe_globals(runner_safe_globals()):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines()]
        refused = [line for line in lines if 'global' in line.lower()]
        if not refused:  # not a pickle at all: corrupt or truncated
            raise CheckpointLoadError(
                f'{filename} is not a readable PyTorch checkpoint (corrupt or '
                f'truncated?): {lines[-1] if lines else error}') from None
        raise CheckpointLoadError(
            f'{filename}: refused to load -- the file asks to run or build '
            f'objects other than tensors and plain containers ({refused[0]}).'
            ' Loading never executes code from a checkpoint; if you trust '
            f'this file, name it in {TRUST_ENV} or pass --trust-checkpoint '
            f'{filename} to tools/train.py / tools/test.py') from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError) as error:
        raise CheckpointLoadError(
            f'{filename} is not a readable PyTorch checkpoint (corrupt or '
            f'truncated?): {type(error).__name__}: {error}') from None
