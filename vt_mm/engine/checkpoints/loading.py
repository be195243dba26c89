"""Reading checkpoints: one clear error for a file that is not one, no load of non-finite
weights (here and through every mmengine load), and strict loading for tests."""
import os.path as osp
import re
from typing import List

import torch

__all__ = ['CheckpointFileError', 'CheckpointMismatchError', 'NonFiniteWeightsError',
           'read_checkpoint', 'state_dict_of', 'non_finite_tensors', 'check_finite',
           'refuse_non_finite_loads', 'weight_mismatch', 'load_checkpoint_strictly']



class CheckpointMismatchError(RuntimeError):
    """The checkpoint does not fit the model (or optimizer) of the config."""

class CheckpointFileError(RuntimeError):
    """A path that does not hold a readable checkpoint."""

class NonFiniteWeightsError(RuntimeError):
    """Parameters or optimizer state hold NaN/Inf; nothing was saved."""

def read_checkpoint(path: str) -> dict:
    """The checkpoint at ``path``, read as mmengine reads it (any scheme its ``CheckpointLoader``
    knows, vt-mm's weights_only allow-list), or one :class:`CheckpointFileError` saying what the
    file is instead: a folder, missing, empty, or not a checkpoint."""
    from mmengine.runner.checkpoint import _load_checkpoint
    local = '://' not in str(path)
    if local and osp.isdir(path):
        raise CheckpointFileError(f'{path} is a folder, not a checkpoint file')
    if local and not osp.isfile(path):
        raise CheckpointFileError(f'{path}: no such checkpoint file')
    if local and osp.getsize(path) == 0:
        raise CheckpointFileError(f'{path} is empty (0 bytes): a save or download that did not '
                                  'finish. Use another checkpoint (--resume takes the newest one '
                                  'that loads)')
    try:
        checkpoint = _load_checkpoint(path, map_location='cpu')
    except Exception as e:  # noqa: BLE001 - any failure: not a checkpoint
        first = str(e).splitlines()[0] if str(e) else 'no message'
        raise CheckpointFileError(f'{path} is not a checkpoint torch can read ({type(e).__name__}:'
                                  f' {first}); it may be truncated, a text or HTML file saved '
                                  'under a .pth name, or not a PyTorch file') from None
    if not isinstance(checkpoint, dict):
        raise CheckpointFileError(f'{path} holds a {type(checkpoint).__name__}, not a checkpoint '
                                  '(a dict of weights, or one with a state_dict)')
    return checkpoint

def state_dict_of(checkpoint: dict) -> dict:
    """The weights of a checkpoint (its ``state_dict``, or the dict itself), without the
    ``module.`` prefix of wrapped models (as mmengine's Runner revises them)."""
    state = checkpoint.get('state_dict', checkpoint)
    return {re.sub(r'^module\.', '', k): v for k, v in state.items()}

def non_finite_tensors(state: dict) -> List[str]:
    """Names of the floating-point tensors of ``state`` that hold NaN or Inf, in order."""
    return [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
            and not bool(torch.isfinite(v).all())]

def _listing(keys: List[str], max_listed: int = 8) -> str:
    more = f' ... (+{len(keys) - max_listed} more)' if len(keys) > max_listed else ''
    return ', '.join(keys[:max_listed]) + more

def check_finite(state: dict, what: str) -> None:
    """Raises :class:`NonFiniteWeightsError` naming the first tensors of ``state`` (``what``:
    the checkpoint, for the message) that hold NaN or Inf."""
    bad = non_finite_tensors(state)
    if bad:
        raise NonFiniteWeightsError(
            f'{what} holds NaN/Inf in {len(bad)} tensors ({_listing(bad)}); nothing was loaded. '
            'These are the weights of a run that diverged: use an earlier checkpoint (the '
            'checkpoint hook refuses to write such weights)')

def refuse_non_finite_loads() -> None:
    """Every checkpoint mmengine loads into a model (the Runner's load_from and resume,
    ``init_cfg=dict(type='Pretrained')``, the toolboxes' inferencers and ``init_model``) goes
    through ``mmengine.runner.checkpoint.load_state_dict``; wrapped, it refuses non-finite
    weights before any is copied."""
    from mmengine.runner import checkpoint as mmengine_checkpoint
    original = mmengine_checkpoint.load_state_dict
    if hasattr(original, '_vt_mm_finite'):  # wrapped already
        return

    def load_state_dict(module, state_dict, strict=False, logger=None):
        check_finite(state_dict, 'the checkpoint being loaded')
        return original(module, state_dict, strict, logger)

    load_state_dict._vt_mm_finite = True
    load_state_dict.__wrapped__ = original  # mmengine's own, for tests that wrap it again
    mmengine_checkpoint.load_state_dict = load_state_dict

def _model_of(runner):
    from mmengine.model import BaseTTAModel, is_model_wrapper
    model = runner.model
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model

def weight_mismatch(state: dict, model: torch.nn.Module, max_listed: int = 8) -> List[str]:
    """Lines naming the keys of ``state`` missing from ``model``, unexpected in it, and of
    another shape (empty: they fit)."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state)
                    if tuple(state[k].shape) != tuple(expected[k]))
    lines = []
    if missing:
        lines.append(f'  {len(missing)} missing keys: {_listing(missing, max_listed)}')
    if unexpected:
        lines.append(f'  {len(unexpected)} unexpected keys: {_listing(unexpected, max_listed)}')
    if shapes:
        lines.append('  %d keys with other shapes: %s' % (len(shapes), _listing(
            [f'{k} {tuple(state[k].shape)} vs {tuple(expected[k])}' for k in shapes],
            max_listed)))
    return lines

def load_checkpoint_strictly(runner, path: str, max_listed: int = 8) -> None:
    """Load a test checkpoint into the runner's model through mmengine, strictly.

    mmengine's Runner loads ``load_from`` non-strictly and only logs a warning, so a checkpoint
    of another architecture would give a meaningless score. Here the file is read
    (:func:`read_checkpoint`: a file that is not a checkpoint is one clear error), refused if a
    weight is NaN/Inf, compared key by key with the model (the TTA wrapper unwrapped, as
    mmengine does), refused with the first missing, unexpected and differently shaped keys
    listed, and otherwise loaded by ``runner.load_checkpoint(..., strict=True)``. The caller
    leaves ``cfg.load_from`` unset so that nothing loads it twice.
    """
    state = state_dict_of(read_checkpoint(path))
    check_finite(state, f'checkpoint {path}')
    lines = weight_mismatch(state, _model_of(runner), max_listed)
    if lines:
        raise CheckpointMismatchError('\n'.join(
            [f'checkpoint {path} does not fit the model of this config:'] + lines +
            ['Use the checkpoint trained with this config, or convert an official one with '
             'tools/model_converters/.']))
    runner.load_checkpoint(path, map_location='cpu', strict=True)

