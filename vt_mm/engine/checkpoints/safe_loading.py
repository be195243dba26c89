"""Safe loading of mmengine Runner checkpoints with torch's ``weights_only=True``.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls ``torch.load``
without the argument, so resuming or testing a Runner checkpoint fails on the non-tensor objects
it holds (the MessageHub's ``HistoryBuffer`` logs, numpy arrays and scalars). Rather than turning
the safety off (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``), vt-mm allow-lists exactly those types:
a checkpoint carrying any other pickled object is still refused by torch. The converters read
the authors' checkpoints with the same safety (:func:`load_checkpoint_file`).
"""
import pickle
from typing import List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['SAFE_CHECKPOINT_GLOBALS', 'allow_mmengine_checkpoints', 'load_checkpoint_file',
           'unwrap_state_dict']



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

def load_checkpoint_file(path: str, trust: bool = False) -> dict:
    """``torch.load`` for converters: safe by default, with a clear way out for trusted files,
    and one clear error for a file that is not a checkpoint (missing, a folder, empty, text)."""
    import os.path as osp
    if not osp.exists(path):
        raise RuntimeError(f'{path}: no such file')
    if osp.isdir(path):
        raise RuntimeError(f'{path} is a folder, not a checkpoint file')
    if osp.getsize(path) == 0:
        raise RuntimeError(f'{path} is empty (0 bytes): a download or save that did not finish')
    head = _head(path)
    if not head.startswith((b'PK', b'\x80')):  # neither torch's zip format nor a pickle
        raise RuntimeError(f'{path} is not a PyTorch checkpoint (it starts with {head!r}: a '
                           'text or HTML file saved under its name?)')
    try:
        return torch.load(path, map_location='cpu', weights_only=not trust)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else ''
        raise RuntimeError(
            f'{path} holds pickled objects besides tensors (e.g. a training script\'s args), so it '
            'cannot be loaded safely with weights_only=True. If you trust its source, rerun with '
            f'--trust to load it with full unpickling. ({first})') from None
    except (EOFError, RuntimeError, ValueError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else 'no message'
        raise RuntimeError(f'{path} is not a checkpoint torch can read ({type(e).__name__}: '
                           f'{first}); it may be truncated or not a PyTorch file') from None

def _head(path: str, size: int = 16) -> bytes:
    with open(path, 'rb') as f:
        return f.read(size)

def unwrap_state_dict(checkpoint: dict, prefer_ema: bool = False) -> dict:
    """The tensor dict inside a checkpoint, wherever the training script put it.

    Accepts a bare state_dict or one wrapped in ``state_dict`` / ``state_dict_ema`` / ``model``
    (``prefer_ema`` picks the EMA weights when both are present), and strips DataParallel's
    ``module.`` prefixes.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f'expected a dict checkpoint, got {type(checkpoint).__name__}')
    order = ('state_dict_ema', 'state_dict', 'model') if prefer_ema else ('state_dict', 'model',
                                                                          'state_dict_ema')
    for key in order:
        if key in checkpoint and isinstance(checkpoint[key], dict):
            checkpoint = checkpoint[key]
            break
    if not checkpoint or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError('no state_dict found in the checkpoint (looked for a dict of tensors, '
                         f'or one under {order})')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in checkpoint.items()}
