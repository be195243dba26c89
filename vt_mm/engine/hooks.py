"""Training-reliability hooks, declared by ``configs/_base_/vt_mm_runtime.py`` in every vt-mm
config's ``custom_hooks`` (so the toolboxes' own train tools run them too).

* :class:`ResumeRNGHook` makes ``--resume`` exact: the checkpoint also carries the Python, NumPy
  and torch random states, restored where the interrupted run was (after the train loop has
  fast-forwarded the dataloader past the batches already seen, before the next one is drawn).
* :class:`NonFiniteLossHook` stops training at the first NaN/Inf loss with a message naming the
  iteration and the loss terms, instead of training on garbage.
* :class:`~vt_mm.engine.checkpoints.CheckpointSafetyHook` makes checkpoints atomic and finite
  and ``--resume`` find the newest one that loads (see :mod:`vt_mm.engine.checkpoints`).
* :class:`RankConsistencyHook` checks, in distributed training, that every rank holds identical
  parameters (per-tensor float64 checksums gathered from all ranks) at the end of training.
* :class:`NetworkCompileHook` makes mmengine's ``compile=True`` compile the model's networks
  rather than the whole train step (which recompiles at every iteration on torch 2.14).
"""
import random
from typing import Dict, Optional

import numpy as np
import torch
from mmengine.dist import all_gather, get_world_size, is_distributed
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .checkpoints import last_good_checkpoint

__all__ = ['ResumeRNGHook', 'NonFiniteLossHook', 'RankConsistencyHook', 'NonFiniteLossError',
           'NetworkCompileHook', 'compile_networks', 'reliability_hooks']


def _get_rng_state() -> Dict[str, object]:
    py_version, py_internal, py_gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return dict(
        python=dict(version=py_version, internal=list(py_internal), gauss=py_gauss),
        numpy=dict(keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached=float(cached)),
        torch=torch.get_rng_state())


def _set_rng_state(state: Dict[str, object]) -> None:
    py = state['python']
    random.setstate((py['version'], tuple(py['internal']), py['gauss']))
    n = state['numpy']
    np.random.set_state(('MT19937', n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'],
                         n['cached']))
    torch.set_rng_state(state['torch'])


class _RestoreAfterSkip:
    """Wraps the train loop's dataloader iterator: after the first ``skip`` batches (mmengine's
    fast-forward over data already trained on), restore the saved random state, then continue.
    """

    def __init__(self, inner, skip: int, state: dict):
        self._inner, self._skip, self._state = inner, skip, state

    def __iter__(self):
        return self

    def __next__(self):
        if self._state is not None:
            if self._skip == 0:
                _set_rng_state(self._state)
                self._state = None
            else:
                self._skip -= 1
        return next(self._inner)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@HOOKS.register_module()
class ResumeRNGHook(Hook):
    """Save the random states in every checkpoint; restore them when training resumes.

    The state is put back exactly where the interrupted run was: for iteration-based loops,
    after mmengine has fast-forwarded the dataloader past the batches already trained on (that
    replays the data pipeline's random draws) and before the next batch is drawn; for
    epoch-based loops, before the first batch of the resumed epoch. Stored as tensors and
    plain numbers, so checkpoints still load with ``weights_only``. In distributed runs only
    rank 0's state is saved; there the ranks keep their fresh seeds.
    """

    priority = 'VERY_LOW'

    def __init__(self):
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = _get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if 'rng_state' in checkpoint and not is_distributed():
            self._pending = checkpoint['rng_state']

    def before_train(self, runner) -> None:
        if self._pending is None:
            return
        loop = runner.train_loop
        skip = getattr(loop, '_iter', 0) if hasattr(loop, 'dataloader_iterator') else 0
        if skip > 0:
            loop.dataloader_iterator = _RestoreAfterSkip(loop.dataloader_iterator, skip,
                                                         self._pending)
        else:
            _set_rng_state(self._pending)
        self._pending = None


class NonFiniteLossError(RuntimeError):
    """Raised by :class:`NonFiniteLossHook`."""


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop at the first non-finite loss, naming the iteration and every loss term."""

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs or 'loss' not in outputs:
            return
        loss = outputs['loss']
        if torch.isfinite(torch.as_tensor(loss)).all():
            return
        terms = ', '.join(f'{k}={float(torch.as_tensor(v).float().mean()):.4g}'
                          for k, v in outputs.items() if 'loss' in k)
        last = last_good_checkpoint(runner.work_dir)
        raise NonFiniteLossError(
            f'Loss became non-finite at iteration {runner.iter + 1} (epoch {runner.epoch}): '
            f'{terms}. Training stopped; last good checkpoint: {last or "none yet"} '
            '(checkpoints are checked for finite weights before they are written). Usual '
            'causes: a learning rate too high for the batch size (try a lower lr, a warm-up or '
            'optim_wrapper.clip_grad), labels outside [0, num_classes) other than the ignore '
            'index, or corrupt images.')


@HOOKS.register_module()
class RankConsistencyHook(Hook):
    """In distributed training, check that all ranks hold identical parameters.

    Every ``interval`` iterations and at the end of training, each rank computes per-tensor
    float64 checksums (sum and sum of squares) of its parameters; rank-to-rank
    differences raise an error naming the first tensor that differs. Logs one line when the
    ranks agree.

    Args:
        interval (int): Iterations between checks; 0 checks only at the end. Default: 0.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 0):
        self.interval = interval

    def _check(self, runner, where: str) -> None:
        if not is_distributed():
            return
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        names, sums = [], []
        # parameters only: BN running statistics are per rank under DDP (each rank updates them
        # on its own batches after the buffer broadcast); checkpoints keep rank 0's
        for name, t in model.named_parameters():
            if t.is_floating_point():
                t64 = t.detach().double()
                names.append(name)
                sums.append(torch.stack([t64.sum(), (t64 * t64).sum()]))
        local = torch.stack(sums).cpu()
        gathered = all_gather(local)
        for rank, other in enumerate(gathered):
            diff = (other - local).abs().amax(dim=1)
            if bool((diff > 0).any()):
                first = names[int(torch.nonzero(diff > 0)[0])]
                raise RuntimeError(f'{where}: rank {rank} holds different weights from this rank '
                                   f'(first differing tensor: {first}); distributed training is '
                                   'out of sync')
        runner.logger.info(f'{where}: parameters identical across '
                           f'{get_world_size()} ranks ({len(names)} tensors checked)')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.interval and self.every_n_train_iters(runner, self.interval):
            self._check(runner, f'iteration {runner.iter + 1}')

    def after_train(self, runner) -> None:
        self._check(runner, 'end of training')


# the parts of a model that are networks (tensors in, tensors out), compiled by NetworkCompileHook;
# losses, data preprocessing, detectors' heads and the optimizer stay eager
COMPILED_PARTS = ('backbone', 'neck', 'decode_head', 'auxiliary_head', 'head')


def compile_networks(model: torch.nn.Module, options: Optional[dict] = None) -> list:
    """Compiles the ``forward`` of each of ``model``'s networks (:data:`COMPILED_PARTS`) in place,
    for training: in eval mode each network runs its eager ``forward``.

    Why eval runs eagerly: validation sees images of many sizes (mmseg's whole-image and
    sliding-window testing), and a compiled network compiles again, from scratch, for each new
    size (Inductor's CPU lowering of adaptive pooling and convolution layouts specialises on
    the exact size even with ``dynamic=True``) and once more for eval mode, minutes each, until
    Dynamo's recompile limit sends it back to eager anyway. Compiled and eager outputs are
    equal (tests/test_engine/test_compile.py).

    Sizes are static unless ``options`` say ``dynamic=True``: a new training size (mmdet's
    multi-scale training) compiles the networks again, as fast as the first time. Symbolic sizes
    do not pay on the CPU: Inductor's lowering still specialises on the size, so a second size
    compiles again, and each compile takes several times longer
    (benchmarks/reports/compile.md); PyramidTNT's token-grid arithmetic does not finish tracing
    with them (torch's default, ``dynamic=None``, switches to symbolic sizes at the second
    size). With ``dynamic=True`` Dynamo's duck sizing is turned off for the process, since a
    square training crop would otherwise tie height to width and the first non-square batch
    would recompile; Dynamo then captures one graph for any size (tested with the ``eager``
    and ``aot_eager`` backends).

    Args:
        model (nn.Module): an mmseg segmentor, mmdet detector or mmpretrain classifier (not
            wrapped).
        options (dict, optional): ``torch.compile`` keyword arguments. Default ``dynamic``:
            False.

    Returns:
        list[str]: the names of the parts compiled now (parts compiled before are left alone).

    Example:
        >>> import torch
        >>> from vt_mm.engine.hooks import compile_networks
        >>> model = torch.nn.Module()
        >>> model.backbone = torch.nn.Conv2d(3, 4, 3)
        >>> compile_networks(model, dict(backend='eager'))
        ['backbone']
        >>> compile_networks(model, dict(backend='eager'))  # already compiled
        []
    """
    options = {'dynamic': False, **(options or {})}
    if options['dynamic']:
        import torch.fx.experimental._config as fx_config
        fx_config.use_duck_shape = False
    compiled = []
    for name in COMPILED_PARTS:
        part = getattr(model, name, None)
        if not isinstance(part, torch.nn.Module) or hasattr(part.forward,
                                                            '_torchdynamo_orig_callable'):
            continue
        part.forward = _train_mode_compiled(part, torch.compile(part.forward, **options))
        compiled.append(name)
    return compiled


def _train_mode_compiled(module: torch.nn.Module, compiled):
    """``module``'s forward: ``compiled`` in training mode, the eager one in eval mode."""
    eager = module.forward

    def forward(*args, **kwargs):
        return (compiled if module.training else eager)(*args, **kwargs)

    forward._torchdynamo_orig_callable = eager  # how torch marks a compiled callable
    return forward


@HOOKS.register_module()
class NetworkCompileHook(Hook):
    """mmengine's ``compile`` switch, applied to the model's networks instead of its train step.

    mmengine compiles the whole ``train_step``: data preprocessing, forward, loss, backward and
    the optimizer. On torch 2.14 that fails or crawls for reasons outside the models (measured
    on vt-mm's and mmseg's configs, benchmarks/reports/compile.md):

    * Dynamo recompiles the step at every iteration, because it guards on the data samples'
      metadata (``data_samples[0].img_path``), until its recompile limit sends it back to
      eager: VT-FPN trained 4-6x slower than eagerly;
    * mmengine's optimizer constructor builds the parameter groups as ``ConfigDict``s, over
      which Dynamo cannot trace ``optimizer.step()`` (``InternalTorchDynamoError:
      'UserDefinedDictVariable' object has no attribute 'items'``) once ``paramwise_cfg`` makes
      several groups (SeaFormer's and PyramidTNT's recipes, mmseg's SegFormer configs), and over
      the one group per parameter that it makes (242 for SeaFormer-T), tracing alone takes 28 s.

    So, before the first iteration, this hook undoes mmengine's compiled ``train_step`` and
    compiles, with the same ``compile`` options, the networks (:func:`compile_networks`: the
    ``forward`` of each of the model's ``backbone``, ``neck``, ``decode_head``,
    ``auxiliary_head`` and ``head``; for mmdet's detectors the backbone and neck), which compile
    as one graph each (tests/test_engine/test_compile.py), for training; validation runs them
    eagerly. Loss, data handling and the optimizer run eagerly; weights, checkpoints and
    state-dict keys are unchanged. Nothing happens without ``compile``.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        options = runner.cfg.get('compile')
        if not options:
            return
        options = {} if options is True else dict(options)
        wrapped = runner.model
        if 'train_step' in vars(wrapped):  # mmengine's torch.compile(train_step)
            del wrapped.train_step
        model = wrapped.module if hasattr(wrapped, 'module') else wrapped
        compiled = compile_networks(model, options)
        runner.logger.info(f'NetworkCompileHook: compiled {", ".join(compiled) or "nothing"} '
                           f'with {options or "default options"}; the train step runs eagerly')


def reliability_hooks() -> list:
    """The hooks every vt-mm config declares, read from where they are written (once):
    ``configs/_base_/vt_mm_runtime.py``'s ``custom_hooks`` (tools/train.py warns about any a
    config lacks)."""
    import os.path as osp

    from mmengine.config import Config

    from ..utils.config_scope import configs_root
    base = osp.join(configs_root(), '_base_', 'vt_mm_runtime.py')
    return list(Config.fromfile(base).custom_hooks)
