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


def load_checkpoint_file(path: str, trust: bool = False) -> dict:
    """``torch.load`` for converters: safe by default, with a clear way out for trusted files."""
    try:
        return torch.load(path, map_location='cpu', weights_only=not trust)
    except pickle.UnpicklingError as e:
        raise RuntimeError(
            f'{path} holds pickled objects besides tensors (e.g. a training script\'s args), so it '
            'cannot be loaded safely with weights_only=True. If you trust its source, rerun with '
            f'--trust to load it with full unpickling. ({str(e).splitlines()[0]})') from None


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


def convert_checkpoint_cli(argv, description: str, convert, name: str) -> dict:
    """The command line shared by tools/model_converters/*: ``SRC DST [--ema] [--trust]``.

    Loads SRC safely (``--trust`` for full unpickling), takes its state_dict (``--ema``: the
    EMA weights when present), applies ``convert`` (official keys -> vt-mm keys) and saves
    ``{'state_dict': ..., 'meta': {'converted_from': ...}}`` to DST.
    """
    import argparse
    import os.path as osp
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output path')
    parser.add_argument('--ema', action='store_true', help='take state_dict_ema when present')
    parser.add_argument('--trust', action='store_true', help='allow full unpickling of SRC')
    args = parser.parse_args(argv)
    state = unwrap_state_dict(load_checkpoint_file(args.src, args.trust), prefer_ema=args.ema)
    converted = convert(state)
    torch.save(dict(state_dict=converted, meta=dict(converted_from=osp.basename(args.src))),
               args.dst)
    print(f'[{name}] {len(converted)} tensors -> {args.dst}')
    return converted
