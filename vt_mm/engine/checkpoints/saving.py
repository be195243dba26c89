"""Saving checkpoints that cannot lose work: mmengine's ``CheckpointHook`` with atomic files,
finite weights only, and the retired checkpoint removed after its successor is complete."""
import os.path as osp
from typing import Iterable, List, Tuple

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

from .files import atomic_write, last_good_checkpoint
from .loading import NonFiniteWeightsError, _listing, _model_of

__all__ = ['AtomicCheckpointHook', 'non_finite_state']



def _named_tensors(runner) -> Iterable[Tuple[str, torch.Tensor]]:
    model = _model_of(runner)  # the names a checkpoint's state_dict has (no 'module.')
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
        raise NonFiniteWeightsError(
            f'{"epoch" if self.by_epoch else "iteration"} {step}: {len(bad)} tensors hold NaN/Inf '
            f'({_listing(bad)}); the checkpoint was not saved. Last good checkpoint: '
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
