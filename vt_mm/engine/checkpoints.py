"""Checkpoints that survive a kill, a full disk and diverged weights; a resume that finds them.

mmengine 0.10.7's ``CheckpointHook`` writes ``iter_N.pth`` in place, deletes the oldest kept
checkpoint *before* the new one is written and rewrites ``last_checkpoint`` in place. A SIGKILL
during a save with ``max_keep_ckpts=1`` then leaves a 0-byte newest file and a ``last_checkpoint``
naming a deleted one: nothing to resume from. vt-mm keeps the hook's behaviour and fixes the order:

* :class:`AtomicLocalBackend` (file backend ``'atomic_local'``) writes every file to
  ``.NAME.PID.tmp`` beside it, flushes and fsyncs it, and renames it into place, so a file
  under its final name is always complete. A full disk (checked before writing, and ``ENOSPC`` while
  writing) removes the partial file and raises :class:`CheckpointDiskFullError`: one line with
  the directory, the free space and the checkpoint size.
* :class:`AtomicCheckpointHook` (a ``CheckpointHook``) checks parameters, buffers and optimizer
  state before saving (:class:`NonFiniteWeightsError` instead of a non-finite checkpoint),
  saves through that backend, replaces ``last_checkpoint`` atomically, and only then removes
  the checkpoint that ``max_keep_ckpts`` retires (the previous best one too).
* :class:`CheckpointSafetyHook`, declared in ``configs/_base_/vt_mm_runtime.py``'s
  ``custom_hooks`` (a base config cannot also set ``default_hooks`` beside a toolbox's
  ``default_runtime.py``: mmengine refuses keys defined in two bases), turns the runner's
  ``CheckpointHook`` into an :class:`AtomicCheckpointHook` before training, so the toolboxes' own
  train tools get all of this too; and for ``resume=True`` without a file it picks the newest
  checkpoint in the work dir that loads (:func:`find_resumable_checkpoint`), saying which one and
  why, or warns that training starts from scratch.

Also here: :func:`load_checkpoint_strictly`, the one way vt-mm's test tool loads a checkpoint.
"""
import errno
import functools
import logging
import os
import os.path as osp
import re
import shutil
import signal
from typing import Iterable, List, Optional, Tuple

import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

__all__ = [
    'AtomicLocalBackend', 'AtomicCheckpointHook', 'CheckpointSafetyHook',
    'CheckpointDiskFullError', 'NonFiniteWeightsError', 'CheckpointMismatchError',
    'atomic_write', 'find_resumable_checkpoint', 'non_finite_state', 'load_checkpoint_strictly',
    'CheckpointFileError', 'read_checkpoint', 'check_finite', 'non_finite_tensors',
    'check_resume_fits', 'weight_mismatch', 'state_dict_of'
]

# what CheckpointHook's default filename_tmpl writes: iter_N.pth / epoch_N.pth
_CHECKPOINT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


class CheckpointDiskFullError(OSError):
    """No space left for a checkpoint; the partial file was removed."""


class NonFiniteWeightsError(RuntimeError):
    """Parameters or optimizer state hold NaN/Inf; nothing was saved."""


def _human(num_bytes: float) -> str:
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(num_bytes) < 1024 or unit == 'TiB':
            return f'{num_bytes:.0f} {unit}' if unit == 'B' else f'{num_bytes:.1f} {unit}'
        num_bytes /= 1024
    return ''  # unreachable


def temporary_path(path: str) -> str:
    """Where :func:`atomic_write` writes ``path`` before renaming it: ``.NAME.PID.tmp`` beside it
    (same file system, so the rename is atomic; a leading dot keeps it out of checkpoint
    listings; the process id keeps two processes that write the same name apart)."""
    return osp.join(osp.dirname(path), f'.{osp.basename(path)}.{os.getpid()}.tmp')


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _disk_full(directory: str, name: str, size: int, free: Optional[int] = None
               ) -> CheckpointDiskFullError:
    free = shutil.disk_usage(directory).free if free is None else free
    return CheckpointDiskFullError(
        errno.ENOSPC,
        f'no space left in {directory} to save {name}: {_human(free)} free, the file needs '
        f'{_human(size)}; nothing partial was left, and the previous checkpoint is intact. Free '
        'space there, lower default_hooks.checkpoint.max_keep_ckpts, or set --work-dir (or '
        'default_hooks.checkpoint.out_dir) to a disk with room, then resume with --resume')


def atomic_write(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the complete new one.

    Written to :func:`temporary_path`, flushed and fsynced, renamed over ``path``, then the
    directory is fsynced (the rename itself must survive a power cut). Raises
    :class:`CheckpointDiskFullError` (partial file removed) when the disk cannot hold it.
    """
    path = str(path)
    directory = osp.dirname(path) or '.'
    os.makedirs(directory, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < len(data):
        raise _disk_full(directory, osp.basename(path), len(data), free)
    tmp = temporary_path(path)
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(directory, osp.basename(path), len(data)) from None
        raise
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename still happened
        pass


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, but ``put`` / ``put_text`` write atomically
    (:func:`atomic_write`)."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, str(filepath))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(obj.encode(encoding), str(filepath))


def _named_tensors(runner) -> Iterable[Tuple[str, torch.Tensor]]:
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    yield from model.named_parameters()
    yield from model.named_buffers()
    optim_wrapper = getattr(runner, 'optim_wrapper', None)
    if optim_wrapper is None:
        return
    names = {id(p): n for n, p in model.named_parameters()}
    wrappers = optim_wrapper.values() if isinstance(optim_wrapper, OptimWrapperDict) else [
        optim_wrapper]
    for wrapper in wrappers:
        for param, state in wrapper.optimizer.state.items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    yield f'optimizer {key} of {names.get(id(param), "a parameter")}', value


def non_finite_state(runner) -> List[str]:
    """Names of the parameters, buffers and optimizer-state tensors that hold NaN or Inf."""
    bad = []
    for name, tensor in _named_tensors(runner):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad.append(name)
    return bad


def last_good_checkpoint(work_dir: str) -> Optional[str]:
    """The file ``work_dir/last_checkpoint`` names, if it exists."""
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            name = f.read().strip()
    except OSError:
        return None
    return name if name and osp.isfile(name) else None


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) whose saves cannot lose work.

    Files are written by :class:`AtomicLocalBackend` (unless ``backend_args`` /
    ``file_client_args`` or a remote ``out_dir`` choose another backend); ``last_checkpoint``
    is replaced atomically after the checkpoint is complete; the checkpoint that
    ``max_keep_ckpts`` retires, and the previous best one, are removed only after that. Before
    every save the model's parameters and buffers and the optimizer state are checked: a
    non-finite value raises :class:`NonFiniteWeightsError` naming the tensors and the last good
    checkpoint, and nothing is written.
    """

    def before_train(self, runner) -> None:
        out_dir = self.out_dir if self.out_dir is not None else runner.work_dir
        if self.backend_args is None and self.file_client_args is None and '://' not in str(
                out_dir):
            self.backend_args = dict(backend='atomic_local')
        super().before_train(runner)

    def _check_finite(self, runner, step) -> None:
        bad = non_finite_state(runner)
        if not bad:
            return
        last = last_good_checkpoint(runner.work_dir)
        listed = ', '.join(bad[:8]) + (f' ... (+{len(bad) - 8} more)' if len(bad) > 8 else '')
        raise NonFiniteWeightsError(
            f'{"epoch" if self.by_epoch else "iteration"} {step}: {len(bad)} tensors hold NaN/Inf '
            f'({listed}); the checkpoint was not saved. Last good checkpoint: '
            f'{last or "none yet"}. Usual causes: a learning rate too high for the batch size '
            '(lower it, add a warm-up or optim_wrapper.clip_grad), or labels outside '
            '[0, num_classes).')

    def _save_checkpoint_with_step(self, runner, step, meta):
        self._check_finite(runner, step)
        retired = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                retired = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        path = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', path)
        runner.save_checkpoint(
            self.out_dir,
            filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        self.last_ckpt = path
        if not is_main_process():
            return
        atomic_write(str(path).encode(), osp.join(runner.work_dir, 'last_checkpoint'))
        if retired is not None and retired != step:
            self._remove(self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(
                retired)))

    def _remove(self, path) -> None:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # deepspeed checkpoints are directories
            self.file_backend.rmtree(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        if not self.save_best:
            return
        self._check_finite(runner, runner.iter)
        # mmengine removes the previous best before writing the new one: defer the removals
        # until everything of this call is written
        backend = self.file_backend
        deferring = _DeferredRemovals(backend)
        self.file_backend = deferring
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        for path in deferring.pending:
            self._remove(path)


class _DeferredRemovals:
    """A file backend whose ``remove`` / ``rmtree`` only note the path."""

    def __init__(self, backend):
        self._backend = backend
        self.pending: List[str] = []

    def remove(self, path) -> None:
        self.pending.append(path)

    def rmtree(self, path) -> None:
        self.pending.append(path)

    def __getattr__(self, name):
        return getattr(self._backend, name)


def _loads(path: str) -> Optional[str]:
    """None if ``path`` is a checkpoint that loads (weights_only, vt-mm's allow-list), else why."""
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not resumable"
        return f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else "no message"}'
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        return 'not a training checkpoint (no state_dict)'
    return None


# what atomic_write leaves when its process dies mid-save: .iter_N.pth.PID.tmp,
# .last_checkpoint.PID.tmp (and, from older versions, the same without .PID)
_PARTIAL_NAME = re.compile(r'^\.((?:iter|epoch)_\d+\.pth|last_checkpoint)(?:\.(\d+))?\.tmp$')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_partial_files(directory: str) -> List[str]:
    """Removes the temporaries a killed save left in ``directory`` (``.iter_N.pth.PID.tmp``,
    ``.last_checkpoint.PID.tmp``) whose process is gone; a live writer's are kept. Returns the
    names removed."""
    removed = []
    if osp.isdir(directory):
        for name in sorted(os.listdir(directory)):
            match = _PARTIAL_NAME.match(name)
            if match is None:
                continue
            pid = int(match.group(2)) if match.group(2) else None
            if pid is not None and _alive(pid):  # a write in progress (this process's too)
                continue
            _remove_quietly(osp.join(directory, name))
            removed.append(name)
    return removed


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
    named = None
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
        candidates[osp.abspath(named)] = int(match.group(2)) if match else float('inf')
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


class CheckpointMismatchError(RuntimeError):
    """The checkpoint does not fit the model (or optimizer) of the config."""


class CheckpointFileError(RuntimeError):
    """A path that does not hold a readable checkpoint."""


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


def _refuse_non_finite_loads() -> None:
    """Every checkpoint mmengine loads into a model (the Runner's load_from and resume,
    ``init_cfg=dict(type='Pretrained')``, the toolboxes' inferencers and ``init_model``) goes
    through ``mmengine.runner.checkpoint.load_state_dict``; wrapped, it refuses non-finite
    weights before any is copied."""
    from mmengine.runner import checkpoint as mmengine_checkpoint
    original = mmengine_checkpoint.load_state_dict
    if getattr(original, '_vt_mm_finite', False):
        return

    def load_state_dict(module, state_dict, strict=False, logger=None):
        check_finite(state_dict, 'the checkpoint being loaded')
        return original(module, state_dict, strict, logger)

    load_state_dict._vt_mm_finite = True
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
    resumes) and then act as they would without it.
    """

    priority = 'VERY_HIGH'

    def __init__(self):
        self._locked = None
        self._previous_handlers = {}

    def before_run(self, runner) -> None:
        from .workdir_lock import held_by_this_process, lock_work_dir
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
        if not getattr(runner, '_resume', False):
            return
        if getattr(runner, '_load_from', None) is None:
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
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous_handlers[signum] = signal.signal(
                    signum, functools.partial(self._interrupted, runner))
            except ValueError:  # not the main thread: leave the handlers alone
                pass

    def after_train(self, runner) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def after_run(self, runner) -> None:
        from .workdir_lock import release_work_dir
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
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)


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


_refuse_non_finite_loads()
