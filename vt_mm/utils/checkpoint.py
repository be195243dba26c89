"""Safe loading of mmengine Runner checkpoints with torch's ``weights_only=True``.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls ``torch.load``
without the argument, so resuming or testing a Runner checkpoint fails on the non-tensor objects
it holds (the MessageHub's ``HistoryBuffer`` logs, numpy arrays and scalars). Rather than turning
the safety off (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``), vt-mm allow-lists exactly those types:
a checkpoint carrying any other pickled object is still refused by torch.
"""
import pickle
from typing import List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_globals() -> List[object]:
    """The numpy callables and classes that pickled arrays, dtypes and scalars refer to."""
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int8,
                                                 np.int16, np.int32, np.int64, np.uint8,
                                                 np.uint16, np.uint32, np.uint64, np.bool_)]
    return [_reconstruct, scalar, np.ndarray, np.dtype] + dtype_classes


def history_buffer_getattr(obj, name):
    """Stands in for ``builtins.getattr`` while unpickling a checkpoint.

    A pickled HistoryBuffer refers to its statistics methods as ``getattr(HistoryBuffer, 'mean')``.
    Allow-listing the real ``getattr`` would let a checkpoint reach any attribute of any allowed
    object; this resolves only those methods and refuses everything else.
    """
    allowed = HistoryBuffer._statistics_methods.keys() | {'min', 'max', 'mean', 'current'}
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); only HistoryBuffer statistics methods '
        'are allowed. Refusing to load it: it was not written by an mmengine Runner.')


SAFE_CHECKPOINT_GLOBALS: List[object] = [HistoryBuffer, (history_buffer_getattr, 'builtins.getattr')
                                         ] + _numpy_globals()


def allow_mmengine_checkpoints() -> None:
    """Adds the types of mmengine Runner checkpoints to torch's weights_only allow-list."""
    torch.serialization.add_safe_globals(SAFE_CHECKPOINT_GLOBALS)
