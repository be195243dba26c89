"""The reliability hooks (vt_mm/engine/hooks.py): exact resume, NaN stop, rank check, network
compile, and the list every config declares."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from helpers import ROOT
from helpers.tools import iters, run_python, tool_env
from mmengine.config import Config

from vt_mm.engine import hooks


def test_reliability_hook_list_is_pinned():
    assert [h['type'] for h in hooks.reliability_hooks()] == [
        'ResumeRNGHook', 'NonFiniteLossHook', 'RankConsistencyHook', 'CheckpointSafetyHook',
        'NetworkCompileHook']
    assert (hooks.ResumeRNGHook.priority, hooks.NonFiniteLossHook.priority,
            hooks.RankConsistencyHook.priority, hooks.NetworkCompileHook.priority) == (
                'VERY_LOW', 'ABOVE_NORMAL', 'LOW', 'VERY_HIGH')
    assert hooks.COMPILED_PARTS == ('backbone', 'neck', 'decode_head', 'auxiliary_head', 'head')


def test_restore_after_skip_restores_exactly_after_the_skipped_batches():
    restored = []
    original = hooks._set_rng_state
    try:
        hooks._set_rng_state = lambda state: restored.append(state)
        wrapped = hooks._RestoreAfterSkip(iter(range(10)), 3, 'state')
        for expected in range(3):
            assert next(wrapped) == expected and restored == []
        assert next(wrapped) == 3 and restored == ['state']
        assert [next(wrapped) for _ in range(3)] == [4, 5, 6] and restored == ['state']
        assert iter(wrapped) is wrapped
        at_once = hooks._RestoreAfterSkip(iter(range(2)), 0, 'now')
        assert next(at_once) == 0 and restored == ['state', 'now']
    finally:
        hooks._set_rng_state = original
    inner = SimpleNamespace(__next__=None, sampler='the sampler')
    assert hooks._RestoreAfterSkip(inner, 1, None).sampler == 'the sampler'


def test_resume_rng_hook_leaves_distributed_runs_and_plain_starts_alone(monkeypatch):
    hook = hooks.ResumeRNGHook()
    checkpoint = {}
    hook.before_save_checkpoint(None, checkpoint)
    assert set(checkpoint['rng_state']) == {'python', 'numpy', 'torch'}
    hook.after_load_checkpoint(None, {})
    assert hook._pending is None
    monkeypatch.setattr(hooks, 'is_distributed', lambda: True)
    hook.after_load_checkpoint(None, checkpoint)
    assert hook._pending is None
    monkeypatch.setattr(hooks, 'is_distributed', lambda: False)
    hook.after_load_checkpoint(None, checkpoint)
    assert hook._pending is checkpoint['rng_state']
    loop = SimpleNamespace(_iter=0, dataloader_iterator=iter([1]))
    hook.before_train(SimpleNamespace(train_loop=loop))
    assert not isinstance(loop.dataloader_iterator, hooks._RestoreAfterSkip)
    assert hook._pending is None
    hook.before_train(SimpleNamespace(train_loop=loop))  # nothing pending: nothing happens
    # resumed after one iteration (the first value that skips): restored after that batch
    hook.after_load_checkpoint(None, checkpoint)
    one = SimpleNamespace(_iter=1, dataloader_iterator=iter([1, 2]))
    hook.before_train(SimpleNamespace(train_loop=one))
    assert isinstance(one.dataloader_iterator, hooks._RestoreAfterSkip)
    # a loop without an iteration count (epoch-based): restored at once
    hook.after_load_checkpoint(None, checkpoint)
    epochs = SimpleNamespace(dataloader_iterator=iter([1]))
    hook.before_train(SimpleNamespace(train_loop=epochs))
    assert not isinstance(epochs.dataloader_iterator, hooks._RestoreAfterSkip)


def test_nonfinite_loss_hook_ignores_steps_without_a_loss():
    hook = hooks.NonFiniteLossHook()
    runner = SimpleNamespace(iter=0, epoch=0, work_dir='.')
    hook.after_train_iter(runner, 0, outputs=None)
    hook.after_train_iter(runner, 0, outputs={})
    hook.after_train_iter(runner, 0, outputs=dict(acc=torch.tensor(float('nan'))))
    with pytest.raises(hooks.NonFiniteLossError) as info:
        hook.after_train_iter(runner, 0, outputs=dict(
            loss=torch.tensor([1.0, float('nan')]), loss_a=torch.tensor(2.0),
            acc=torch.tensor(0.5)))
    assert str(info.value) == (
        'Loss became non-finite at iteration 1 (epoch 0): loss=nan, loss_a=2. Training '
        'stopped; last good checkpoint: none yet (checkpoints are checked for finite weights '
        'before they are written). Usual causes: a learning rate too high for the batch size '
        '(try a lower lr, a warm-up or optim_wrapper.clip_grad), labels outside [0, '
        'num_classes) other than the ignore index, or corrupt images.')


def test_rank_consistency_hook_intervals(monkeypatch):
    checks, runners = [], []
    hook = hooks.RankConsistencyHook(interval=3)
    monkeypatch.setattr(hook, '_check', lambda runner, where: (checks.append(where),
                                                               runners.append(runner)))
    iteration_runners = [SimpleNamespace(iter=i) for i in range(7)]
    for i, runner in enumerate(iteration_runners):
        hook.after_train_iter(runner, i)
    assert checks == ['iteration 3', 'iteration 6']
    assert runners == [iteration_runners[2], iteration_runners[5]]  # the runner is checked
    last = SimpleNamespace(iter=7)
    hook.after_train(last)
    assert checks[-1] == 'end of training' and runners[-1] is last
    never = hooks.RankConsistencyHook()
    assert never.interval == 0
    monkeypatch.setattr(never, '_check', lambda runner, where: checks.append(where))
    for i in range(5):
        never.after_train_iter(SimpleNamespace(iter=i), i)
    assert checks == ['iteration 3', 'iteration 6', 'end of training']


def test_rank_consistency_check_compares_every_rank_with_this_one(monkeypatch):
    """The check itself, with the gather of a 3-rank run simulated: float parameters only
    (checksums: sum and sum of squares), the model inside a wrapper, the first differing tensor
    and rank named; one log line when all agree; nothing outside distributed runs."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    model.register_parameter('steps', torch.nn.Parameter(torch.tensor([3]), requires_grad=False))
    logs = []
    runner = SimpleNamespace(model=SimpleNamespace(module=model),
                             logger=SimpleNamespace(info=logs.append))
    hook = hooks.RankConsistencyHook()
    monkeypatch.setattr(hooks, 'is_distributed', lambda: False)
    hook._check(None, 'iteration 1')  # not distributed: not even the runner is read
    monkeypatch.setattr(hooks, 'is_distributed', lambda: True)
    monkeypatch.setattr(hooks, 'get_world_size', lambda: 3)
    others = []
    monkeypatch.setattr(hooks, 'all_gather', lambda local: [local] + [o(local) for o in others])
    others[:] = [lambda t: t.clone(), lambda t: t.clone()]
    hook._check(runner, 'iteration 4')
    assert logs == ['iteration 4: parameters identical across 3 ranks (4 tensors checked)']

    def bias_differs(t):  # rank 2 holds another 1.bias (its sum of squares differs)
        t = t.clone()
        t[3, 1] += 1e-9
        return t

    others[:] = [lambda t: t.clone(), bias_differs]
    with pytest.raises(RuntimeError) as info:
        hook._check(runner, 'end of training')
    assert str(info.value) == ('end of training: rank 2 holds different weights from this rank '
                               '(first differing tensor: 1.bias); distributed training is out '
                               'of sync')

    def first_weight_differs(t):  # rank 1: the sums of 0.weight
        t = t.clone()
        t[0, 0] -= 1.0
        return t

    others[:] = [first_weight_differs, bias_differs]
    with pytest.raises(RuntimeError, match=r'^iteration 9: rank 1 holds .* tensor: 0\.weight\)'):
        hook._check(runner, 'iteration 9')


class _Model(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(2, 2)
        self.neck = torch.nn.Linear(2, 2)
        self.head = 'not a module'
        self.loss = torch.nn.Linear(2, 2)


def test_network_compile_hook_compiles_the_networks_once(monkeypatch):
    """The hook compiles each network once, with the config's options (static sizes unless they
    say ``dynamic``), and undoes mmengine's compiled step."""
    compiled = []

    def fake_compile(fn, **options):
        compiled.append((fn.__self__, options))

        def wrapper(*a):
            return fn(*a)

        return wrapper

    monkeypatch.setattr(torch, 'compile', fake_compile)
    logs = []
    model = _Model()
    model.train_step = 'mmengine compiled step'
    runner = SimpleNamespace(cfg=Config(dict(compile=dict(backend='eager'))), model=model,
                             logger=SimpleNamespace(info=logs.append))
    hook = hooks.NetworkCompileHook()
    hook.before_train(runner)
    assert [(m, o) for m, o in compiled] == [
        (model.backbone, dict(dynamic=False, backend='eager')),
        (model.neck, dict(dynamic=False, backend='eager'))]
    assert 'train_step' not in vars(model)
    assert logs == ["NetworkCompileHook: compiled backbone, neck with {'backend': 'eager'}; the "
                    'train step runs eagerly']
    hook.before_train(runner)  # already compiled: nothing compiled twice
    assert len(compiled) == 2 and logs[-1].startswith('NetworkCompileHook: compiled nothing')
    wrapped = SimpleNamespace(module=_Model())
    runner = SimpleNamespace(cfg=Config(dict(compile=True)), model=wrapped,
                             logger=SimpleNamespace(info=logs.append))
    hook.before_train(runner)
    assert compiled[-1] == (wrapped.module.neck, dict(dynamic=False))
    assert logs[-1] == ('NetworkCompileHook: compiled backbone, neck with default options; the '
                        'train step runs eagerly')
    for off in (None, False):
        before = len(compiled)
        hook.before_train(SimpleNamespace(cfg=Config(dict(compile=off)), model=_Model()))
        assert len(compiled) == before


def test_compiled_networks_run_compiled_in_training_and_eagerly_in_eval(monkeypatch):
    """The compiled forward in training mode and the eager one in eval mode, with every
    positional and keyword argument; marked as compiled with the eager one as its original.
    A part that is missing or no module does not stop the ones after it."""
    calls = []

    def fake_compile(fn, **options):
        def compiled(*args, **kwargs):
            calls.append(('compiled', args, kwargs))
            return fn(*args, **kwargs)
        return compiled

    monkeypatch.setattr(torch, 'compile', fake_compile)

    class Net(torch.nn.Module):

        def forward(self, x, scale=1.0):
            calls.append(('eager', x, scale))
            return x * scale

    model = torch.nn.Module()
    model.neck, model.head = Net(), Net()  # no backbone, no decode_head
    eager = model.neck.forward
    assert hooks.compile_networks(model) == ['neck', 'head']
    assert model.neck.forward._torchdynamo_orig_callable == eager
    x = torch.ones(2)
    assert torch.equal(model.neck(x, scale=3.0), 3 * x)
    assert [c[0] for c in calls] == ['compiled', 'eager']
    assert calls[0][1:] == ((x, ), dict(scale=3.0))
    calls.clear()
    model.eval()
    assert torch.equal(model.neck(x, 2.0), 2 * x)
    assert calls == [('eager', x, 2.0)]


def test_only_dynamic_compile_turns_dynamos_duck_sizing_off(monkeypatch):
    """Static compiles (the default, or ``dynamic=False``) leave the process-wide duck-sizing
    setting alone; ``dynamic=True`` turns it off."""
    import torch.fx.experimental._config as fx_config
    options = []
    monkeypatch.setattr(torch, 'compile', lambda fn, **kw: options.append(kw) or fn)
    with fx_config.patch(use_duck_shape=True):
        for given in ({}, dict(dynamic=False)):
            assert hooks.compile_networks(_Model(), given) == ['backbone', 'neck']
            assert fx_config.use_duck_shape is True
        assert options == [dict(dynamic=False)] * 4
        hooks.compile_networks(_Model(), dict(dynamic=True))
        assert fx_config.use_duck_shape is False and options[-1] == dict(dynamic=True)


_env = tool_env
_run = run_python
_iters = iters


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(lip_root, tmp_path, tiny_config):
    """Kill a run between checkpoints, --resume it, and land on the uninterrupted run's weights."""
    cfg = tiny_config(tmp_path, lip_root, deterministic=True)
    total = 8
    # reference: uninterrupted
    _run(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'ref')] + _iters(total, 100))
    # interrupted: same config but a long schedule, SIGKILLed once iter_4.pth is complete
    work = tmp_path / 'killed'
    proc = subprocess.Popen([sys.executable, 'tools/train.py', cfg, '--work-dir', str(work)] +
                            _iters(total, 100), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = work / 'last_checkpoint'  # written after the checkpoint file is complete
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if marker.exists() and marker.read_text().strip().endswith(('iter_4.pth', 'iter_6.pth')):
            break
        time.sleep(0.05)
    assert proc.poll() is None, 'the run ended before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work / f'iter_{total}.pth').exists()
    last = marker.read_text().strip()
    resumed_from = int(osp.basename(last)[len('iter_'):-len('.pth')])
    _, out = _run(['tools/train.py', cfg, '--work-dir', str(work), '--resume'] +
                  _iters(total, 100))
    assert f'Iter(train) [{resumed_from + 1}/{total}]' in out
    assert 'Iter(train) [1/' not in out  # continued, not restarted

    ref = _weights(tmp_path / 'ref' / f'iter_{total}.pth')
    res = _weights(work / f'iter_{total}.pth')
    assert ref['meta']['iter'] == res['meta']['iter'] == total
    for key, value in ref['state_dict'].items():
        assert torch.equal(value, res['state_dict'][key]), key
    # optimizer and scheduler state too
    ref_opt, res_opt = ref['optimizer']['state'], res['optimizer']['state']
    assert ref_opt.keys() == res_opt.keys()
    for k in ref_opt:
        for name, v in ref_opt[k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(res_opt[k][name])), (k, name)
    assert ref['param_schedulers'] == res['param_schedulers']


def test_resume_rng_hook_round_trip():
    import random
    from types import SimpleNamespace

    import numpy as np

    from vt_mm.engine.hooks import ResumeRNGHook
    hook = ResumeRNGHook()
    checkpoint = {}
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    random.gauss(0, 1)  # draws a pair and keeps the second for the next call
    np.random.standard_normal()  # numpy's Box-Muller keeps one too
    hook.before_save_checkpoint(None, checkpoint)
    expected = (torch.rand(3), random.random(), np.random.rand(), random.gauss(0, 1),
                np.random.standard_normal())
    # a resumed process: other states, then the hook restores at the first iteration
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    hook.after_load_checkpoint(None, torch.load(_save(checkpoint), weights_only=True))
    # an iteration-based loop resumed at iteration 2: the two skipped batches draw random
    # numbers; the state must be back before the third batch is drawn
    draws = []

    def batches():
        while True:
            draws.append((torch.rand(3), random.random(), np.random.rand(), random.gauss(0, 1),
                          np.random.standard_normal()))
            yield len(draws)

    loop = SimpleNamespace(_iter=2, dataloader_iterator=batches())
    hook.before_train(SimpleNamespace(train_loop=loop))
    assert [next(loop.dataloader_iterator) for _ in range(3)] == [1, 2, 3]
    got = draws[2]
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
    assert not torch.equal(draws[0][0], expected[0])


def test_resume_rng_hook_restores_epoch_based_loops_at_once():
    """Guards against the epoch-based branch skipping the restore: an epoch loop has no
    dataloader iterator to fast-forward, so the state is back before the first batch."""
    import random
    from types import SimpleNamespace

    from vt_mm.engine.hooks import ResumeRNGHook
    hook = ResumeRNGHook()
    checkpoint = {}
    torch.manual_seed(5)
    random.seed(5)
    hook.before_save_checkpoint(None, checkpoint)
    expected = (torch.rand(2), random.random())
    torch.manual_seed(1)
    random.seed(1)
    hook.after_load_checkpoint(None, torch.load(_save(checkpoint), weights_only=True))
    hook.before_train(SimpleNamespace(train_loop=SimpleNamespace(_epoch=3, _iter=30)))
    got = (torch.rand(2), random.random())
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]


def _save(obj):
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


@pytest.mark.parametrize('bad', ['nan', 'inf', '-inf'])
def test_nonfinite_loss_hook_message(bad, tmp_path):
    """NaN and both infinities stop training (guards against a hook that tests isnan only)."""
    from types import SimpleNamespace

    from vt_mm.engine.hooks import NonFiniteLossError, NonFiniteLossHook
    (tmp_path / 'iter_40.pth').write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_40.pth'))
    runner = SimpleNamespace(iter=41, epoch=0, work_dir=str(tmp_path))
    hook = NonFiniteLossHook()
    hook.after_train_iter(runner, 0, outputs=dict(loss=torch.tensor(1.5)))
    with pytest.raises(NonFiniteLossError,
                       match=rf'iteration 42.*loss_ce={bad}.*iter_40.pth.*lower lr'):
        hook.after_train_iter(runner, 0, outputs=dict(loss=torch.tensor(float(bad)),
                                                      loss_ce=torch.tensor(float(bad))))


@pytest.mark.slow
def test_nan_loss_stops_training_with_a_message(lip_root, tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, lip_root, deterministic=True)
    code, out = _run(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w')] + _iters(4) +
                     ['model.decode_head.loss_decode.loss_weight=1e39'], expect_ok=False)
    assert code != 0
    assert 'NonFiniteLossError: Loss became non-finite at iteration 1' in out, out[-3000:]
    assert not (tmp_path / 'w' / 'iter_2.pth').exists()


RUNTIME_CFG = osp.join(ROOT, 'configs', '_base_', 'vt_mm_runtime.py')


def test_runtime_base_declares_the_reliability_hooks():
    runtime = Config.fromfile(RUNTIME_CFG)
    assert runtime.custom_hooks == [dict(type=t) for t in (
        'ResumeRNGHook', 'NonFiniteLossHook', 'RankConsistencyHook', 'CheckpointSafetyHook',
        'NetworkCompileHook')]
    assert runtime.custom_imports == dict(imports=['vt_mm'], allow_failed_imports=False)


def test_plain_mmengine_runner_registers_the_hooks(tmp_path, lip_root, tiny_config):
    """What mmseg's own tools/train.py does (Config.fromfile + Runner.from_cfg), without vt-mm's
    tools: the hooks come from the config alone."""
    from mmengine.runner import Runner
    cfg = Config.fromfile(tiny_config(tmp_path, lip_root))
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    names = {type(h).__name__ for h in runner.hooks}
    assert {'ResumeRNGHook', 'NonFiniteLossHook', 'RankConsistencyHook',
            'CheckpointSafetyHook'} <= names
    # before the run, the runner's CheckpointHook becomes the atomic one (same arguments)
    plain = next(h for h in runner.hooks if type(h).__name__ == 'CheckpointHook')
    interval = plain.interval
    runner.call_hook('before_run')
    assert type(plain).__name__ == 'AtomicCheckpointHook' and plain.interval == interval


def test_train_tool_reports_missing_hooks():
    from vt_mm.engine.preflight import check_reliability_hooks
    cfg = Config(dict(custom_hooks=[dict(type='NonFiniteLossHook')]))
    assert check_reliability_hooks(cfg) == ['ResumeRNGHook', 'RankConsistencyHook',
                                            'CheckpointSafetyHook', 'NetworkCompileHook']
    assert check_reliability_hooks(Config.fromfile(RUNTIME_CFG)) == []
