"""Resuming: the newest checkpoint that loads, checked against the config's model before
anything is loaded, and the hook every vt-mm config declares (one run per work dir, atomic
saves, a log line on SIGTERM/SIGINT)."""
import functools
import logging
import math
import os
import os.path as osp
import signal
from typing import List, Optional, Tuple

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from .files import _CHECKPOINT_NAME, last_good_checkpoint, remove_partial_files
from .loading import (
    CheckpointMismatchError,
    _model_of,
    read_checkpoint,
    state_dict_of,
    weight_mismatch,
)
from .saving import AtomicCheckpointHook

__all__ = ['find_resumable_checkpoint', 'check_resume_fits', 'CheckpointSafetyHook']



def _loads(path: str) -> Optional[str]:
    """None if ``path`` is a checkpoint that loads (weights_only, vt-mm's allow-list), else why.

    Read as mmengine's resume reads it: onto the CPU (a checkpoint saved on a GPU loads on a
    CPU-only machine) and without mmap (which refuses the pre-zip format that mmengine loads)."""
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not resumable"
        return f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else "no message"}'
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        return 'not a training checkpoint (no state_dict)'
    return None

def find_resumable_checkpoint(work_dir: str) -> Tuple[Optional[str], List[str]]:
    """The newest checkpoint under ``work_dir`` that loads, and the notes on what was skipped.

    Candidates are ``iter_N.pth`` / ``epoch_N.pth`` in the work dir and the file that
    ``last_checkpoint`` names (it may live in another ``out_dir``), newest (largest N) first;
    an empty, missing or dangling ``last_checkpoint`` and every newer file that fails to load
    (truncated, corrupt) are noted and skipped.
    """
    notes: List[str] = []
    candidates = {}
    marker = osp.join(work_dir, 'last_checkpoint')
    named = None  # pragma: no mutate (equivalent: any value that is no file, read for truth)
    if not osp.isfile(marker):
        notes.append(f'{marker} does not exist')
    else:
        with open(marker) as f:
            named = f.read().strip()
        if not named:
            notes.append(f'{marker} is empty')
        elif not osp.isfile(named):
            notes.append(f'{marker} names {named}, which does not exist')
    if named and osp.isfile(named):
        match = _CHECKPOINT_NAME.match(osp.basename(named))
        candidates[osp.abspath(named)] = int(match.group(2)) if match else math.inf
    if osp.isdir(work_dir):
        for name in os.listdir(work_dir):
            match = _CHECKPOINT_NAME.match(name)
            if match:
                candidates.setdefault(osp.abspath(osp.join(work_dir, name)), int(match.group(2)))
    for path in sorted(candidates, key=lambda p: (candidates[p], p), reverse=True):
        problem = _loads(path)
        if problem is None:
            if named and osp.abspath(named) != path and osp.isfile(named):
                notes.append(f'{marker} names {named}, but {path} is newer and complete')
            return path, notes
        notes.append(f'{path} does not load ({problem})')
    return None, notes

def _optimizer_mismatch(checkpoint: dict, runner) -> List[str]:
    saved = (checkpoint.get('optimizer') or {}).get('param_groups')
    wrapper = getattr(runner, 'optim_wrapper', None)
    optimizer = getattr(wrapper, 'optimizer', None)
    if saved is None or optimizer is None or not hasattr(optimizer, 'param_groups'):
        return []
    ours = [len(g['params']) for g in optimizer.param_groups]
    theirs = [len(g['params']) for g in saved]
    if ours == theirs:
        return []
    return [f'  optimizer: {len(theirs)} parameter groups of {theirs} parameters saved, this '
            f'config makes {len(ours)} of {ours} (optim_wrapper.paramwise_cfg or the model '
            'changed)']

def check_resume_fits(runner, path: str) -> None:
    """Before mmengine resumes from ``path``: its model and optimizer must be the config's, else
    one :class:`CheckpointMismatchError` naming the first keys that differ (mmengine would warn
    about sizes, then fail inside the optimizer)."""
    checkpoint = read_checkpoint(path)
    problems = weight_mismatch(state_dict_of(checkpoint), _model_of(runner))
    problems += _optimizer_mismatch(checkpoint, runner)
    if problems:
        raise CheckpointMismatchError(
            f'--resume: {path} was saved by a run of another config:\n' + '\n'.join(problems) +
            f'\nResume with the config that run used, train this config in another --work-dir, '
            f'or start from those weights without --resume (load_from={path} loads what fits).')

@HOOKS.register_module()
class CheckpointSafetyHook(Hook):
    """Declared in every vt-mm config (``configs/_base_/vt_mm_runtime.py``): one run per work
    dir, atomic and finite checkpoints, a resume that finds the last good one and fits the
    config, and a log line when the run is interrupted, under any train tool.

    Before the run it takes the work dir's lock (:func:`~vt_mm.engine.workdir_lock.
    lock_work_dir`, rank 0), removes the temporaries a killed save left, turns the runner's
    plain ``CheckpointHook`` into an :class:`AtomicCheckpointHook` (same arguments and state),
    and, for ``resume=True`` without a ``load_from`` (``--resume`` with no file), sets the
    checkpoint to resume from: the newest in the work dir that loads
    (:func:`find_resumable_checkpoint`), with a warning when that is not what
    ``last_checkpoint`` says; with none, a warning that training starts from scratch. A
    checkpoint to resume from is checked against the model and optimizer first
    (:func:`check_resume_fits`). It runs before mmengine's ``load_or_resume``. While training,
    SIGTERM and SIGINT log one line (iteration, last good checkpoint, the command that
    resumes) and then act as they would without it. A KeyboardInterrupt raised by the signal
    handler is lost when it lands in a finaliser (``__del__``, a weakref callback: Python
    prints "Exception ignored" and goes on), so SIGINT with Python's default handler also ends
    the run at the end of the current iteration.
    """

    priority = 'VERY_HIGH'

    def __init__(self):
        self._locked = None
        self._previous_handlers = {}
        self._stop_requested = False

    def before_run(self, runner) -> None:
        from ..workdir_lock import held_by_this_process, lock_work_dir
        if is_main_process() and not held_by_this_process(runner.work_dir):
            lock_work_dir(runner.work_dir)
            self._locked = runner.work_dir
        for hook in runner.hooks:
            if type(hook) is CheckpointHook:
                hook.__class__ = AtomicCheckpointHook  # adds methods only, no state
        for directory in self._checkpoint_dirs(runner):
            removed = remove_partial_files(directory)
            if removed:
                print_log(f'removed {len(removed)} partial files of an interrupted save in '
                          f'{directory}: {", ".join(removed)}', logger='current')
        if not runner._resume:
            return
        if runner._load_from is None:
            path, notes = find_resumable_checkpoint(runner.work_dir)
            if path is None:
                print_log(
                    f'--resume: nothing to resume in {runner.work_dir} ('
                    + ('; '.join(notes) or 'no checkpoint') + '). TRAINING STARTS FROM SCRATCH.',
                    logger='current', level=logging.WARNING)
                runner._resume = False
                return
            if notes:
                print_log(f'--resume: resuming from {path}, the newest checkpoint that loads ('
                          + '; '.join(notes) + ')', logger='current', level=logging.WARNING)
            else:
                print_log(f'--resume: resuming from {path}', logger='current')
            runner._load_from = path
        check_resume_fits(runner, runner._load_from)

    @staticmethod
    def _checkpoint_dirs(runner) -> List[str]:
        """The work dir and, for a local ``out_dir``, the folder the checkpoints go to."""
        dirs = [runner.work_dir]
        for hook in runner.hooks:
            out_dir = getattr(hook, 'out_dir', None) if isinstance(hook, CheckpointHook) else None
            if out_dir and '://' not in str(out_dir):
                dirs.append(osp.join(out_dir, osp.basename(osp.normpath(runner.work_dir))))
        return dirs

    def before_train(self, runner) -> None:
        self._stop_requested = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous_handlers[signum] = signal.signal(
                    signum, functools.partial(self._interrupted, runner))
            except ValueError:  # not the main thread: leave the handlers alone
                pass

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._stop_requested:  # the handler's KeyboardInterrupt was lost (docstring)
            raise KeyboardInterrupt(f'SIGINT: training stopped after iteration {runner.iter}')

    def after_train(self, runner) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def after_run(self, runner) -> None:
        from ..workdir_lock import release_work_dir
        if self._locked is not None:
            release_work_dir(self._locked)
            self._locked = None

    def _interrupted(self, runner, signum, frame) -> None:
        """Logs where the run stopped and how to continue, then lets the signal act as it would
        have (SIGTERM ends the process, SIGINT raises KeyboardInterrupt)."""
        last = last_good_checkpoint(runner.work_dir)
        config = getattr(runner.cfg, 'filename', None) or 'CONFIG'
        runner.logger.warning(
            f'{signal.Signals(signum).name} at iteration {runner.iter + 1} (epoch '
            f'{runner.epoch}): '
            f'training stopped; last good checkpoint: {last or "none yet"}; continue with: '
            f'python tools/train.py {config} --work-dir {runner.work_dir} --resume')
        for handler in runner.logger.handlers:
            handler.flush()
        previous = self._previous_handlers.pop(signum, signal.SIG_DFL)
        signal.signal(signum, previous)
        self._stop_requested = previous is signal.default_int_handler
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)
