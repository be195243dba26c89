"""AtomicCheckpointHook (vt_mm/engine/checkpoints/saving.py) in a tiny in-process Runner and
through tools/train.py: retirement order, finite weights only, best checkpoints."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from vt_mm.engine import checkpoints
from vt_mm.engine.checkpoints import files, saving


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')


def _train(cfg, work, *options, resume=False, expect_ok=True, timeout=600):
    args = [sys.executable, 'tools/train.py', cfg, '--work-dir', str(work)]
    args += ['--resume'] if resume else []
    args += ['--cfg-options', *options] if options else []
    proc = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    if expect_ok:
        assert proc.returncode == 0, out[-6000:]
    return proc.returncode, out


# the tiny config's checkpoint hook (every 2 iterations), keeping only the newest checkpoint
KEEP_ONE = 'default_hooks[\'checkpoint\'][\'max_keep_ckpts\'] = 1\n'


def _iters(n):
    return [f'train_cfg.max_iters={n}', f'train_cfg.val_interval={100 + n}']


def _save_fake_checkpoint(path, iteration):
    torch.save({'state_dict': {'w': torch.full((4, ), float(iteration))},
                'meta': {'iter': iteration}}, path)


class _ToyModel(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)
        self.bn = torch.nn.BatchNorm1d(1)


def _toy_runner(work_dir, max_iters=5, checkpoint=None, extra_hooks=(), max_epochs=None):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):

        def __init__(self):
            super().__init__()
            self.net = _ToyModel()

        def forward(self, inputs, data_samples=None, mode='tensor'):
            out = self.net.bn(self.net.linear(torch.stack(list(inputs))))
            if mode == 'loss':
                return dict(loss=out.pow(2).mean())
            return out

    data = [torch.randn(2) for _ in range(8)]
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=lambda b: dict(
        inputs=b))
    hook = dict(type='CheckpointHook', interval=1, by_epoch=max_epochs is not None,
                max_keep_ckpts=2)
    hook.update(checkpoint or {})
    train_cfg = (dict(by_epoch=False, max_iters=max_iters) if max_epochs is None else
                 dict(by_epoch=True, max_epochs=max_epochs))
    return Runner(model=Toy(), work_dir=str(work_dir), train_dataloader=loader,
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                  train_cfg=train_cfg,
                  default_hooks=dict(checkpoint=hook, logger=dict(type='LoggerHook',
                                                                  interval=100)),
                  custom_hooks=[dict(type='CheckpointSafetyHook'), *extra_hooks],
                  default_scope='mmengine', randomness=dict(seed=0))


def _hook(runner, kind):
    return next(h for h in runner.hooks if isinstance(h, kind))


def test_non_finite_state_names_parameters_and_optimizer_state():
    from types import SimpleNamespace

    from mmengine.optim import OptimWrapper
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 2)).sum().backward()
    optimizer.step()
    runner = SimpleNamespace(model=model, optim_wrapper=OptimWrapper(optimizer))
    assert checkpoints.non_finite_state(runner) == []
    with torch.no_grad():
        model[0].bias[1] = float('inf')
    optimizer.state[model[0].weight]['exp_avg'][0, 0] = float('nan')
    model[1].running_var[0] = float('nan')
    assert checkpoints.non_finite_state(runner) == [
        '0.bias', '1.running_var', 'optimizer exp_avg of 0.weight']


def test_atomic_hook_keeps_the_newest_and_writes_last_checkpoint_last(tmp_path):
    """Every save through the atomic backend; max_keep_ckpts=2 keeps the two newest, the
    retired one removed only after its successor and last_checkpoint are complete."""
    from mmengine.hooks import CheckpointHook
    runner = _toy_runner(tmp_path / 'w')
    events = []
    original_remove = checkpoints.AtomicCheckpointHook._remove
    original_write = saving.atomic_write

    def remove(self, path):
        events.append(('remove', osp.basename(path)))
        original_remove(self, path)

    def write(data, path):
        events.append(('write', osp.basename(path)))
        original_write(data, path)

    checkpoints.AtomicCheckpointHook._remove = remove
    saving.atomic_write = files.atomic_write = write
    try:
        runner.train()
    finally:
        checkpoints.AtomicCheckpointHook._remove = original_remove
        saving.atomic_write = files.atomic_write = original_write
    hook = _hook(runner, CheckpointHook)
    assert type(hook) is checkpoints.AtomicCheckpointHook
    assert hook.backend_args == dict(backend='atomic_local')
    work = tmp_path / 'w'
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_4.pth', 'iter_5.pth']
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_5.pth')
    assert runner.message_hub.get_info('keep_ckpt_ids') == [4, 5]
    assert runner.message_hub.get_info('last_ckpt') == str(work / 'iter_5.pth')
    # iter_3 goes only after iter_5.pth and its last_checkpoint are written
    i = events.index(('remove', 'iter_3.pth'))
    assert events[i - 1] == ('write', 'last_checkpoint')
    assert events[i - 2] == ('write', 'iter_5.pth')
    assert not [p for p in os.listdir(work) if p.endswith('.tmp')]
    assert torch.load(work / 'iter_5.pth', weights_only=True)['meta']['iter'] == 5


def test_atomic_hook_saving_the_same_step_again_keeps_one_entry(tmp_path):
    runner = _toy_runner(tmp_path / 'w', max_iters=2)
    runner.train()
    hook = _hook(runner, checkpoints.AtomicCheckpointHook)
    hook._save_checkpoint_with_step(runner, 2, dict(iter=2))
    assert list(hook.keep_ckpt_ids) == [1, 2]
    assert sorted(p.name for p in (tmp_path / 'w').glob('*.pth')) == ['iter_1.pth',
                                                                      'iter_2.pth']


def test_keep_all_checkpoints_with_max_keep_ckpts_off(tmp_path):
    runner = _toy_runner(tmp_path / 'w', max_iters=3, checkpoint=dict(max_keep_ckpts=-1))
    runner.train()
    assert sorted(p.name for p in (tmp_path / 'w').glob('*.pth')) == [
        'iter_1.pth', 'iter_2.pth', 'iter_3.pth']
    assert not hasattr(_hook(runner, checkpoints.AtomicCheckpointHook), 'keep_ckpt_ids')


def test_atomic_hook_leaves_other_backends_alone(tmp_path):
    from mmengine.hooks import CheckpointHook
    runner = _toy_runner(tmp_path / 'w', max_iters=1,
                         checkpoint=dict(backend_args=dict(backend='local')))
    runner.train()
    assert _hook(runner, CheckpointHook).backend_args == dict(backend='local')
    remote = checkpoints.AtomicCheckpointHook(interval=1, out_dir='s3://bucket/ckpt')
    assert '://' in str(remote.out_dir) and remote.backend_args is None
    # a remote out_dir with a local work dir: the backend is the remote one's, not the atomic
    # local one (mmengine's own set-up, which would reach for s3, is left out here)
    import types
    from unittest import mock
    with mock.patch.object(CheckpointHook, 'before_train', lambda self, runner: None):
        remote.before_train(types.SimpleNamespace(work_dir=str(tmp_path)))
        assert remote.backend_args is None
        local = checkpoints.AtomicCheckpointHook(interval=1, out_dir=str(tmp_path / 'ckpt'))
        local.before_train(types.SimpleNamespace(work_dir='s3://bucket/work'))
        assert local.backend_args == dict(backend='atomic_local')


def test_non_finite_weights_stop_the_save_naming_tensors_and_the_last_good_one(tmp_path):
    runner = _toy_runner(tmp_path / 'w', max_iters=2)
    runner.train()
    hook = _hook(runner, checkpoints.AtomicCheckpointHook)
    model = runner.model.net
    with torch.no_grad():
        model.linear.weight[0, 0] = float('nan')
        for i in range(9):
            model.register_buffer(f'extra{i}', torch.tensor([float('inf')]))
    with pytest.raises(checkpoints.NonFiniteWeightsError) as info:
        hook._save_checkpoint_with_step(runner, 3, dict(iter=3))
    assert str(info.value) == (
        'iteration 3: 10 tensors hold NaN/Inf (net.linear.weight, net.extra0, net.extra1, '
        'net.extra2, net.extra3, net.extra4, net.extra5, net.extra6 ... (+2 more)); the '
        f'checkpoint was not saved. Last good checkpoint: {tmp_path / "w" / "iter_2.pth"}. '
        'Usual causes: a learning rate too high for the batch size (lower it, add a warm-up or '
        'optim_wrapper.clip_grad), or labels outside [0, num_classes).')
    assert not (tmp_path / 'w' / 'iter_3.pth').exists()
    hook.by_epoch = True
    with pytest.raises(checkpoints.NonFiniteWeightsError, match='^epoch 3: '):
        hook._save_checkpoint_with_step(runner, 3, dict(epoch=3))
    fresh = tmp_path / 'fresh'
    fresh.mkdir()
    runner._work_dir = str(fresh)
    with pytest.raises(checkpoints.NonFiniteWeightsError, match='Last good checkpoint: none '
                       'yet'):
        hook._save_checkpoint_with_step(runner, 3, dict(iter=3))


def test_best_checkpoint_replaces_the_previous_best_only_after_writing(tmp_path):
    runner = _toy_runner(tmp_path / 'w', max_iters=2,
                         checkpoint=dict(save_best='acc', rule='greater'))
    runner.train()
    hook = _hook(runner, checkpoints.AtomicCheckpointHook)
    work = tmp_path / 'w'
    order = []
    original = checkpoints.AtomicCheckpointHook._remove

    def remove(self, path):
        order.append(('remove', osp.basename(path), (work / 'best_acc_iter_2.pth').exists()))
        original(self, path)

    checkpoints.AtomicCheckpointHook._remove = remove
    try:
        hook._save_best_checkpoint(runner, dict(acc=0.5))
        assert (work / 'best_acc_iter_2.pth').is_file()
        runner.train_loop._iter = 3
        runner.message_hub.update_info('iter', 3)
        hook._save_best_checkpoint(runner, dict(acc=0.9))
    finally:
        checkpoints.AtomicCheckpointHook._remove = original
    assert (work / 'best_acc_iter_3.pth').is_file() and not (work / 'best_acc_iter_2.pth').exists()
    assert ('remove', 'best_acc_iter_2.pth', True) in order
    hook._save_best_checkpoint(runner, dict(acc=0.1))  # not better: nothing changes
    assert (work / 'best_acc_iter_3.pth').is_file()
    hook.save_best = None
    hook._save_best_checkpoint(runner, dict(acc=1.0))
    assert not (work / 'best_acc_iter_4.pth').exists()


def test_best_checkpoint_of_non_finite_weights_is_refused(tmp_path):
    runner = _toy_runner(tmp_path / 'w', max_iters=1, checkpoint=dict(save_best='acc'))
    runner.train()
    hook = _hook(runner, checkpoints.AtomicCheckpointHook)
    with torch.no_grad():
        runner.model.net.bn.running_var.fill_(float('nan'))
    with pytest.raises(checkpoints.NonFiniteWeightsError, match='^iteration 1: 1 tensors'):
        hook._save_best_checkpoint(runner, dict(acc=0.5))


def test_deferred_removals_note_paths_and_forward_the_rest():
    calls = []
    backend = type('Backend', (), {'isfile': lambda self, p: calls.append(p) or True})()
    deferred = saving._DeferredRemovals(backend)
    deferred.remove('a.pth')
    deferred.rmtree('folder')
    assert deferred.pending == ['a.pth', 'folder'] and deferred.isfile('b') is True
    assert calls == ['b']


def test_remove_takes_files_and_deepspeed_folders(tmp_path):
    runner = _toy_runner(tmp_path / 'w', max_iters=1)
    runner.train()
    hook = _hook(runner, checkpoints.AtomicCheckpointHook)
    (tmp_path / 'f.pth').write_bytes(b'x')
    (tmp_path / 'ds').mkdir()
    (tmp_path / 'ds' / 'part').write_bytes(b'x')
    hook._remove(str(tmp_path / 'f.pth'))
    hook._remove(str(tmp_path / 'ds'))
    hook._remove(str(tmp_path / 'missing'))
    assert not (tmp_path / 'f.pth').exists() and not (tmp_path / 'ds').exists()


@pytest.mark.slow
def test_overflowing_weights_are_never_saved(lip_root, tmp_path, tiny_config):
    """SGD at lr 1e10 on a loss scaled by 1e30: the first step's loss (~1e30) is finite, its
    update (~1e40) overflows the weights. mmengine saved such an iter_1.pth as last_checkpoint;
    now training stops naming the tensors and nothing non-finite is on disk."""
    cfg = tiny_config(tmp_path, lip_root)
    work = tmp_path / 'w'
    code, out = _train(cfg, work, *_iters(4), 'default_hooks.checkpoint.interval=1',
                       'optim_wrapper.optimizer.type=SGD', 'optim_wrapper.optimizer.lr=1e10',
                       'model.decode_head.loss_decode.loss_weight=1e30',
                       expect_ok=False)
    assert code != 0
    assert 'NonFiniteWeightsError' in out and 'hold NaN/Inf' in out, out[-3000:]
    assert 'decode_head.conv_seg.weight' in out and 'Last good checkpoint' in out
    for name in os.listdir(work):
        if name.endswith('.pth'):
            state = torch.load(work / name, weights_only=True)['state_dict']
            assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_epoch_checkpoints_carry_the_epoch_and_the_hook_remembers_the_last(tmp_path):
    runner = _toy_runner(tmp_path / 'w', max_epochs=2)
    runner.train()
    work = tmp_path / 'w'
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_1.pth', 'epoch_2.pth']
    meta = torch.load(work / 'epoch_2.pth', weights_only=True)['meta']
    assert (meta['epoch'], meta['iter']) == (2, 8)
    hook = _hook(runner, checkpoints.AtomicCheckpointHook)
    assert hook.last_ckpt == str(work / 'epoch_2.pth')


def test_optimizer_state_of_a_tensor_outside_the_model_is_named_generically():
    from types import SimpleNamespace

    from mmengine.optim import OptimWrapper
    model = torch.nn.Linear(1, 1)
    outside = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([outside])
    outside.grad = torch.ones(1)
    optimizer.step()
    optimizer.state[outside]['exp_avg'].fill_(float('nan'))
    runner = SimpleNamespace(model=model, optim_wrapper=OptimWrapper(optimizer))
    assert checkpoints.non_finite_state(runner) == ['optimizer exp_avg of a parameter']


def test_atomic_hook_passes_the_hooks_extra_arguments_to_the_save_as_mmengine_does(tmp_path):
    """mmengine's CheckpointHook hands its extra keyword arguments (``self.args``) to
    ``runner.save_checkpoint``; the atomic hook that replaces it does the same."""
    runner = _toy_runner(tmp_path / 'w', max_iters=1)
    runner.train()
    hook = _hook(runner, checkpoints.AtomicCheckpointHook)
    hook.args = dict(extra_option='x')
    hook.file_client_args = dict(backend='local')  # deprecated in mmengine, still passed on
    saved = []
    runner.save_checkpoint = lambda *args, **kwargs: saved.append((args, kwargs))
    hook._save_checkpoint_with_step(runner, 2, dict(iter=2))
    args, kwargs = saved[0]
    assert args == (hook.out_dir, 'iter_2.pth', dict(backend='local'))
    # every argument mmengine's own hook passes, with the hook's values
    assert kwargs == dict(save_optimizer=True, save_param_scheduler=True, meta=dict(iter=2),
                          by_epoch=False, backend_args=dict(backend='atomic_local'),
                          extra_option='x')
    hook.save_optimizer, hook.save_param_scheduler = False, False
    hook._save_checkpoint_with_step(runner, 3, dict(iter=3))
    assert (saved[1][1]['save_optimizer'], saved[1][1]['save_param_scheduler']) == (False, False)
