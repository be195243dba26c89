"""Nothing lost (vt_mm/engine/checkpoints.py): atomic checkpoints, a resume that finds the last
good state, no non-finite checkpoint, a full disk that leaves the previous checkpoint usable."""
import errno
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch

import vt_mm  # noqa: F401
from vt_mm.engine import checkpoints
from vt_mm.engine.checkpoints import (
    CheckpointDiskFullError,
    atomic_write,
    find_resumable_checkpoint,
)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


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


# --- atomic writes and the full disk -------------------------------------------------------


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / 'iter_2.pth'
    atomic_write(b'old', str(target))
    atomic_write(b'new contents', str(target))
    assert target.read_bytes() == b'new contents'
    assert os.listdir(tmp_path) == ['iter_2.pth']


def test_write_error_on_a_full_disk_removes_the_partial_file_and_keeps_the_old(tmp_path):
    """ENOSPC while writing (the temporary file is /dev/full): one message with the directory,
    the free space and the size; the partial file is gone and the old file is intact."""
    target = tmp_path / 'last_checkpoint'
    target.write_bytes(b'iter_2.pth')
    os.symlink('/dev/full', checkpoints.temporary_path(str(target)))
    with pytest.raises(CheckpointDiskFullError) as info:
        atomic_write(b'x' * 5000, str(target))
    message = info.value.strerror
    assert info.value.errno == errno.ENOSPC
    assert f'no space left in {tmp_path} to save last_checkpoint' in message
    assert 'free, the file needs 4.9 KiB' in message and 'previous checkpoint is intact' in message
    assert sorted(os.listdir(tmp_path)) == ['last_checkpoint']
    assert target.read_bytes() == b'iter_2.pth'


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    import collections
    usage = collections.namedtuple('usage', 'total used free')
    monkeypatch.setattr(checkpoints.shutil, 'disk_usage', lambda d: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(CheckpointDiskFullError, match=r'100 B free, the file needs 1000 B'):
        atomic_write(b'y' * 1000, str(tmp_path / 'iter_4.pth'))
    assert os.listdir(tmp_path) == []


# --- finding the checkpoint to resume from -------------------------------------------------


@pytest.mark.parametrize('marker', ['empty', 'missing', 'dangling', 'older'])
def test_resume_finds_the_newest_checkpoint_whatever_last_checkpoint_says(tmp_path, marker):
    for i in (2, 4):
        _save_fake_checkpoint(tmp_path / f'iter_{i}.pth', i)
    text = {'empty': '', 'dangling': str(tmp_path / 'iter_6.pth'),
            'older': str(tmp_path / 'iter_2.pth')}.get(marker)
    if text is not None:
        (tmp_path / 'last_checkpoint').write_text(text)
    path, notes = find_resumable_checkpoint(str(tmp_path))
    assert path == str(tmp_path / 'iter_4.pth')
    expected = {'empty': 'is empty', 'missing': 'does not exist', 'dangling': 'iter_6.pth, which '
                'does not exist', 'older': 'is newer and complete'}[marker]
    assert any(expected in n for n in notes), notes


def test_resume_skips_a_truncated_newest_checkpoint(tmp_path):
    for i in (2, 4):
        _save_fake_checkpoint(tmp_path / f'iter_{i}.pth', i)
    data = (tmp_path / 'iter_4.pth').read_bytes()
    (tmp_path / 'iter_4.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    path, notes = find_resumable_checkpoint(str(tmp_path))
    assert path == str(tmp_path / 'iter_2.pth')
    assert any('iter_4.pth does not load' in n for n in notes), notes


def test_nothing_to_resume(tmp_path):
    (tmp_path / 'iter_3.pth').write_bytes(b'')  # a 0-byte file a killed save left
    path, notes = find_resumable_checkpoint(str(tmp_path))
    assert path is None and any('iter_3.pth does not load' in n for n in notes)


@pytest.mark.parametrize('kind,older,newer', [('iter', 999, 1000), ('iter', 9, 10),
                                              ('epoch', 9, 10), ('iter', 99999, 100000)])
def test_resume_orders_checkpoints_by_number_across_digit_counts(tmp_path, kind, older, newer):
    """iter_1000 is newer than iter_999 (a sort by name would pick iter_999), also when
    last_checkpoint names the older one; the note says which one is newer."""
    for i in (older, newer):
        _save_fake_checkpoint(tmp_path / f'{kind}_{i}.pth', i)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / f'{kind}_{older}.pth'))
    path, notes = find_resumable_checkpoint(str(tmp_path))
    assert path == str(tmp_path / f'{kind}_{newer}.pth')
    assert notes == [f'{tmp_path / "last_checkpoint"} names {tmp_path / f"{kind}_{older}.pth"}, '
                     f'but {tmp_path / f"{kind}_{newer}.pth"} is newer and complete']


def test_resume_falls_back_to_the_next_newest_by_number(tmp_path):
    for i in (8, 100, 999, 1000):
        _save_fake_checkpoint(tmp_path / f'iter_{i}.pth', i)
    (tmp_path / 'iter_1000.pth').write_bytes(b'truncated')
    path, notes = find_resumable_checkpoint(str(tmp_path))
    assert path == str(tmp_path / 'iter_999.pth')
    assert notes[0] == f'{tmp_path / "last_checkpoint"} does not exist'
    assert notes[1].startswith(f'{tmp_path / "iter_1000.pth"} does not load (')
    assert len(notes) == 2


def test_resume_takes_the_checkpoint_last_checkpoint_names_elsewhere(tmp_path):
    """A checkpoint in another out_dir that last_checkpoint names counts; one without a number
    in its name is taken as the newest."""
    other = tmp_path / 'elsewhere'
    other.mkdir()
    work = tmp_path / 'work'
    work.mkdir()
    _save_fake_checkpoint(work / 'iter_10.pth', 10)
    _save_fake_checkpoint(other / 'iter_12.pth', 12)
    (work / 'last_checkpoint').write_text(str(other / 'iter_12.pth'))
    assert find_resumable_checkpoint(str(work)) == (str(other / 'iter_12.pth'), [])
    _save_fake_checkpoint(other / 'best_mIoU.pth', 3)
    (work / 'last_checkpoint').write_text(str(other / 'best_mIoU.pth') + '\n')
    assert find_resumable_checkpoint(str(work))[0] == str(other / 'best_mIoU.pth')


def test_only_training_checkpoints_and_checkpoint_names_are_candidates(tmp_path):
    torch.save({'w': torch.zeros(1)}, tmp_path / 'iter_5.pth')  # weights only: no state_dict
    _save_fake_checkpoint(tmp_path / 'iter_3.pth', 3)
    for name in ('iter_7.pth.bak', 'iter_x.pth', 'xiter_9.pth', 'iter_9.pt'):
        _save_fake_checkpoint(tmp_path / name, 9)
    path, notes = find_resumable_checkpoint(str(tmp_path))
    assert path == str(tmp_path / 'iter_3.pth')
    assert f'{tmp_path / "iter_5.pth"} does not load (not a training checkpoint (no state_dict))' \
        in notes


def test_partial_files_are_the_checkpoint_temporaries_of_dead_processes_only(tmp_path):
    """A killed save leaves .iter_N.pth.PID.tmp (or .last_checkpoint.PID.tmp): removed when that
    process is gone, kept while it lives (a live writer), never anything else."""
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True).stdout.strip()
    alive = os.getppid()  # the test runner's parent: alive
    removable = [f'.iter_4.pth.{dead}.tmp', f'.epoch_12.pth.{dead}.tmp',
                 f'.last_checkpoint.{dead}.tmp', '.iter_1000.pth.tmp', '.last_checkpoint.tmp']
    kept = [f'.iter_6.pth.{alive}.tmp', f'.iter_7.pth.{os.getpid()}.tmp', '.notes.tmp',
            'iter_4.pth', '.iter_4.pth',
            'iter_4.pth.tmp', f'.iter_4.pth.{dead}.bak', f'.iter_x.pth.{dead}.tmp',
            f'.best.pth.{dead}.tmp']
    for name in removable + kept:
        (tmp_path / name).write_bytes(b'x')
    removed = checkpoints.remove_partial_files(str(tmp_path))
    assert sorted(removed) == sorted(removable)
    assert sorted(os.listdir(tmp_path)) == sorted(kept)
    assert checkpoints.remove_partial_files(str(tmp_path / 'missing')) == []


def test_temporary_names_are_unique_per_process(tmp_path):
    path = str(tmp_path / 'iter_4.pth')
    assert checkpoints.temporary_path(path) == str(tmp_path / f'.iter_4.pth.{os.getpid()}.tmp')
    other = subprocess.run(
        [sys.executable, '-c', 'import sys; from vt_mm.engine.checkpoints import temporary_path;'
         ' print(temporary_path(sys.argv[1]))', path], capture_output=True, text=True,
        env=_env()).stdout.strip()
    assert other != checkpoints.temporary_path(path) and other.endswith('.tmp')


class _Runner:
    """What CheckpointSafetyHook.before_run reads of a Runner."""

    def __init__(self, work_dir, resume, load_from, hooks=()):
        self.work_dir, self._resume, self._load_from = str(work_dir), resume, load_from
        self.hooks = list(hooks)


def test_safety_hook_resume_precedence_both_ways(tmp_path, monkeypatch):
    """Bare --resume (resume, no load_from) picks the newest checkpoint that loads; --resume
    FILE (load_from given) and a run without resume are left alone, partial files included."""
    from mmengine.hooks import CheckpointHook
    _save_fake_checkpoint(tmp_path / 'iter_99.pth', 99)
    _save_fake_checkpoint(tmp_path / 'iter_100.pth', 100)
    monkeypatch.setattr(checkpoints, 'check_resume_fits', lambda runner, path: fits.append(path))
    fits = []
    for resume, load_from in ((True, str(tmp_path / 'iter_99.pth')), (False, None)):
        (tmp_path / '.iter_102.pth.tmp').write_bytes(b'x')
        plain = CheckpointHook(interval=1)
        runner = _Runner(tmp_path, resume, load_from, [plain])
        hook = checkpoints.CheckpointSafetyHook()
        hook.before_run(runner)
        hook.after_run(runner)
        assert (runner._resume, runner._load_from) == (resume, load_from)
        assert type(plain) is checkpoints.AtomicCheckpointHook  # always made atomic
        # a killed save's temporary goes at every start, whatever the flags
        assert not (tmp_path / '.iter_102.pth.tmp').exists()
    assert fits == [str(tmp_path / 'iter_99.pth')]  # --resume FILE is checked too
    runner = _Runner(tmp_path, True, None)
    hook = checkpoints.CheckpointSafetyHook()
    hook.before_run(runner)
    hook.after_run(runner)
    assert runner._resume is True and runner._load_from == str(tmp_path / 'iter_100.pth')
    assert fits[-1] == str(tmp_path / 'iter_100.pth')
    empty = tmp_path / 'empty'
    runner = _Runner(empty, True, None)
    hook = checkpoints.CheckpointSafetyHook()
    hook.before_run(runner)
    hook.after_run(runner)
    assert runner._resume is False and runner._load_from is None and len(fits) == 2


def test_safety_hook_converts_only_plain_checkpoint_hooks(tmp_path):
    from mmengine.hooks import CheckpointHook

    class OwnCheckpointHook(CheckpointHook):
        pass

    plain, own = CheckpointHook(interval=1), OwnCheckpointHook(interval=1)
    hook = checkpoints.CheckpointSafetyHook()
    hook.before_run(_Runner(str(tmp_path), False, None, [plain, own]))
    hook.after_run(None)
    assert type(plain) is checkpoints.AtomicCheckpointHook and type(own) is OwnCheckpointHook
    assert checkpoints.CheckpointSafetyHook.priority == 'VERY_HIGH'


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


# --- end to end through tools/train.py -----------------------------------------------------


@pytest.mark.slow
def test_kill_during_a_save_loses_nothing(lip_root, tmp_path, tiny_config):
    """SIGKILL while iter_4.pth is being written, max_keep_ckpts=1: the work dir still holds
    iter_2.pth and a last_checkpoint naming it (mmengine alone deleted iter_2.pth first and left
    a 0-byte iter_4.pth); --resume continues from it to the uninterrupted run's weights, bit
    for bit."""
    cfg = tiny_config(tmp_path, lip_root, deterministic=True, extra=KEEP_ONE)
    total = 6
    _train(cfg, tmp_path / 'ref', *_iters(total))
    work = tmp_path / 'killed'
    proc = subprocess.Popen([sys.executable, 'tools/train.py', cfg, '--work-dir', str(work),
                             '--cfg-options'] + _iters(total), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = work / f'.iter_4.pth.{proc.pid}.tmp'
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not partial.exists():
        time.sleep(0.001)
    assert proc.poll() is None and partial.exists(), 'the save of iter_4.pth was not caught'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work / 'iter_4.pth').exists()
    assert (work / 'iter_2.pth').is_file(), 'the kept checkpoint was removed before its successor'
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')

    _, out = _train(cfg, work, *_iters(total), resume=True)
    assert 'resuming from' in out and 'iter_2.pth' in out
    assert f'Iter(train) [3/{total}]' in out and 'Iter(train) [1/' not in out
    assert not partial.exists()
    assert sorted(p for p in os.listdir(work) if p.endswith('.pth')) == [f'iter_{total}.pth']
    ref = torch.load(tmp_path / 'ref' / f'iter_{total}.pth', weights_only=True)
    res = torch.load(work / f'iter_{total}.pth', weights_only=True)
    for key, value in ref['state_dict'].items():
        assert torch.equal(value, res['state_dict'][key]), key
    for k, state in ref['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value),
                               torch.as_tensor(res['optimizer']['state'][k][name])), (k, name)


@pytest.mark.slow
def test_resume_with_a_broken_last_checkpoint_and_a_truncated_newest_file(
        lip_root, tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, lip_root)
    work = tmp_path / 'w'
    _train(cfg, work, *_iters(4))
    (work / 'last_checkpoint').write_text('')
    _, out = _train(cfg, work, *_iters(6), resume=True)
    assert f'resuming from {work / "iter_4.pth"}' in out and 'last_checkpoint is empty' in out
    assert 'Iter(train) [5/6]' in out
    data = (work / 'iter_6.pth').read_bytes()
    (work / 'iter_6.pth').write_bytes(data[:len(data) // 3])
    _, out = _train(cfg, work, *_iters(8), resume=True)
    assert f'resuming from {work / "iter_4.pth"}' in out and 'iter_6.pth does not load' in out
    assert 'Iter(train) [5/8]' in out


@pytest.mark.slow
def test_resume_with_nothing_to_resume_warns_loudly(lip_root, tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, lip_root)
    _, out = _train(cfg, tmp_path / 'empty', *_iters(2), resume=True)
    assert 'WARNING' in out and 'TRAINING STARTS FROM SCRATCH' in out
    assert 'Iter(train) [1/2]' in out


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


@pytest.mark.slow
def test_full_disk_is_one_line_and_the_previous_checkpoint_stays(lip_root, tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, lip_root, extra=KEEP_ONE)
    work = tmp_path / 'w'
    work.mkdir()
    proc = subprocess.Popen([sys.executable, 'tools/train.py', cfg, '--work-dir', str(work),
                             '--cfg-options'] + _iters(6), cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # the disk fills up at the second save: its temporary (named after the process) is /dev/full
    os.symlink('/dev/full', work / f'.iter_4.pth.{proc.pid}.tmp')
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0
    lines = [line for line in out.splitlines() if line.startswith('ERROR: ')]
    assert len(lines) == 1 and 'Traceback' not in out, out[-3000:]
    assert f'no space left in {work} to save iter_4.pth' in lines[0] and ' free, ' in lines[0]
    assert 'the file needs' in lines[0] and 'MiB' in lines[0]
    assert not osp.lexists(work / f'.iter_4.pth.{proc.pid}.tmp')
    assert not (work / 'iter_4.pth').exists()
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')
    assert torch.load(work / 'iter_2.pth', weights_only=True)['meta']['iter'] == 2


# --- no result from broken weights, one message for a file that is not a checkpoint ---------


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


@pytest.mark.parametrize('value', [float('nan'), float('inf'), float('-inf')])
def test_every_mmengine_load_refuses_non_finite_weights(tmp_path, value):
    """mmengine's load_checkpoint (init_cfg=Pretrained, the toolboxes' init_model) and the
    Runner's and inferencers' loads all go through one function that now refuses NaN/Inf
    before copying anything."""
    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import _load_checkpoint_to_model
    model = _tiny_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state['1.running_var'][2] = value
    path = tmp_path / 'bad.pth'
    torch.save({'state_dict': state}, path)
    target = _tiny_model()
    nn_init = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(checkpoints.NonFiniteWeightsError,
                       match=r'^the checkpoint being loaded holds NaN/Inf in 1 tensors '
                             r'\(1\.running_var\); nothing was loaded'):
        load_checkpoint(target, str(path))
    with pytest.raises(checkpoints.NonFiniteWeightsError):
        _load_checkpoint_to_model(target, {'state_dict': state})
    assert all(torch.equal(v, nn_init[k]) for k, v in target.state_dict().items())
    state['1.running_var'][2] = 1.0
    torch.save({'state_dict': state}, path)
    load_checkpoint(target, str(path))  # finite: loads
    assert torch.equal(target[1].running_var, state['1.running_var'])


def test_pretrained_init_cfg_refuses_non_finite_weights(tmp_path):
    from vt_mm.models.backbones import VTResNet
    model = VTResNet(18)
    state = model.state_dict()
    state['layer1.0.conv1.weight'].fill_(float('nan'))
    torch.save({'state_dict': state}, tmp_path / 'nan.pth')
    fresh = VTResNet(18, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'nan.pth')))
    with pytest.raises(checkpoints.NonFiniteWeightsError, match='layer1.0.conv1.weight'):
        fresh.init_weights()


def test_non_finite_tensors_are_listed_in_order_and_only_floats():
    state = {'a': torch.zeros(2), 'b': torch.tensor([1.0, float('nan')]),
             'n': torch.tensor(3), 'c': torch.tensor([float('inf')]), 'd': 'not a tensor',
             'e': torch.tensor([float('-inf')], dtype=torch.float16)}
    assert checkpoints.non_finite_tensors(state) == ['b', 'c', 'e']
    nine = {f'w{i}': torch.tensor([float('nan')]) for i in range(9)}
    with pytest.raises(checkpoints.NonFiniteWeightsError) as info:
        checkpoints.check_finite(nine, 'checkpoint x.pth')
    assert str(info.value).startswith('checkpoint x.pth holds NaN/Inf in 9 tensors (w0, w1, w2, '
                                      'w3, w4, w5, w6, w7 ... (+1 more)); nothing was loaded.')
    checkpoints.check_finite({'a': torch.zeros(1)}, 'x')


def test_files_that_are_not_checkpoints_get_one_message(tmp_path):
    (tmp_path / 'empty.pth').write_bytes(b'')
    (tmp_path / 'page.pth').write_text('<html>404 Not Found</html>')
    torch.save([1, 2], tmp_path / 'list.pth')
    cases = {
        str(tmp_path / 'missing.pth'): 'no such checkpoint file',
        str(tmp_path): 'is a folder, not a checkpoint file',
        str(tmp_path / 'empty.pth'): 'is empty (0 bytes)',
        str(tmp_path / 'page.pth'): 'is not a checkpoint torch can read (',
        str(tmp_path / 'list.pth'): 'holds a list, not a checkpoint',
    }
    for path, message in cases.items():
        with pytest.raises(checkpoints.CheckpointFileError) as info:
            checkpoints.read_checkpoint(path)
        assert str(info.value).startswith(path) and message in str(info.value), path
    _save_fake_checkpoint(tmp_path / 'ok.pth', 3)
    assert checkpoints.read_checkpoint(str(tmp_path / 'ok.pth'))['meta']['iter'] == 3
    assert set(checkpoints.state_dict_of({'state_dict': {'module.a': 1, 'b': 2}})) == {'a', 'b'}
    assert checkpoints.state_dict_of({'w': 1}) == {'w': 1}


@pytest.mark.parametrize('content,message', [
    (None, 'is empty (0 bytes)'), ('text', 'is not a checkpoint torch can read'),
    ('nan', 'holds NaN/Inf in 1 tensors (decode_head.conv_seg.weight)')])
def test_test_tool_refuses_bad_checkpoints_before_any_work(tmp_path, content, message,
                                                           tiny_config):
    """tools/test.py: one line, exit 1, before the data is read or the model is built (the data
    root here does not even exist)."""
    import importlib
    path = tmp_path / 'c.pth'
    if content is None:
        path.write_bytes(b'')
    elif content == 'text':
        path.write_text('not a checkpoint\n')
    else:
        torch.save({'state_dict': {'decode_head.conv_seg.weight': torch.full((2, ), float('nan'))}},
                   path)
    test_tool = importlib.import_module('tools.test')
    with pytest.raises(SystemExit) as info:
        test_tool.main([tiny_config(tmp_path, tmp_path / 'no_data'), str(path)])
    assert str(info.value).startswith(f'ERROR: {path}' if content != 'nan' else
                                      f'ERROR: checkpoint {path}')
    assert message in str(info.value)


class _ResumeRunner:
    """What check_resume_fits reads of a Runner."""

    def __init__(self, model, optimizer=None):
        from types import SimpleNamespace
        self.model = model
        self.optim_wrapper = SimpleNamespace(optimizer=optimizer) if optimizer else None


def test_resume_with_another_config_is_one_message_naming_the_keys(tmp_path):
    saved = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(saved.parameters(), lr=0.1)
    torch.save({'state_dict': saved.state_dict(), 'optimizer': optimizer.state_dict()},
               tmp_path / 'iter_10.pth')
    path = str(tmp_path / 'iter_10.pth')
    # the same model and optimizer: fits
    checkpoints.check_resume_fits(_ResumeRunner(saved, optimizer), path)
    wider = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Linear(16, 2),
                                torch.nn.ReLU())
    with pytest.raises(checkpoints.CheckpointMismatchError) as info:
        checkpoints.check_resume_fits(_ResumeRunner(wider), path)
    message = str(info.value)
    assert message.startswith(f'--resume: {path} was saved by a run of another config:\n')
    assert '3 keys with other shapes: 0.bias (8,) vs (16,), 0.weight (8, 4) vs (16, 4), ' \
        '1.weight (2, 8) vs (2, 16)' in message
    assert message.endswith(f'load_from={path} loads what fits).')
    # same weights, another grouping of the parameters (paramwise_cfg changed)
    groups = torch.optim.SGD([{'params': [saved[0].weight]},
                              {'params': [p for n, p in saved.named_parameters()
                                          if n != '0.weight']}], lr=0.1)
    with pytest.raises(checkpoints.CheckpointMismatchError,
                       match=r'optimizer: 1 parameter groups of \[4\] parameters saved, this '
                             r'config makes 2 of \[1, 3\]'):
        checkpoints.check_resume_fits(_ResumeRunner(saved, groups), path)


def _interrupt_hook(monkeypatch, tmp_path, previous):
    from types import SimpleNamespace
    logged, killed = [], []
    monkeypatch.setattr(checkpoints.os, 'kill', lambda pid, signum: killed.append(signum))
    (tmp_path / 'iter_30.pth').write_bytes(b'x')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_30.pth'))
    runner = SimpleNamespace(iter=37, epoch=0, work_dir=str(tmp_path),
                             cfg=SimpleNamespace(filename='configs/x.py'),
                             logger=SimpleNamespace(warning=logged.append, handlers=[]))
    hook = checkpoints.CheckpointSafetyHook()
    import signal as signal_module
    monkeypatch.setattr(checkpoints.signal, 'signal',
                        lambda signum, handler: previous.get(signum, signal_module.SIG_DFL))
    hook.before_train(runner)
    return hook, runner, logged, killed


def test_sigterm_logs_where_to_resume_then_ends_the_process(tmp_path, monkeypatch):
    import signal as signal_module
    hook, runner, logged, killed = _interrupt_hook(monkeypatch, tmp_path, {})
    hook._interrupted(runner, signal_module.SIGTERM, None)
    assert logged == [f'SIGTERM at iteration 38 (epoch 0): training stopped; last good '
                      f'checkpoint: {tmp_path / "iter_30.pth"}; continue with: python '
                      f'tools/train.py configs/x.py --work-dir {tmp_path} --resume']
    assert killed == [signal_module.SIGTERM]  # then dies by the signal, as without the hook


def test_sigint_logs_then_raises_keyboard_interrupt(tmp_path, monkeypatch):
    import signal as signal_module
    hook, runner, logged, killed = _interrupt_hook(
        monkeypatch, tmp_path, {signal_module.SIGINT: signal_module.default_int_handler})
    with pytest.raises(KeyboardInterrupt):
        hook._interrupted(runner, signal_module.SIGINT, None)
    assert logged[0].startswith('SIGINT at iteration 38 (epoch 0)') and killed == []


def test_the_toolboxes_inferencer_refuses_non_finite_weights(tmp_path, tiny_config, lip_root):
    """A user's own MMSegInferencer(config, weights) gets the refusal too (mmengine's loading
    path), not a silently wrong prediction."""
    from mmseg.apis import MMSegInferencer, init_model
    cfg = tiny_config(tmp_path, lip_root)
    model = init_model(cfg, device='cpu')
    state = model.state_dict()
    state['decode_head.conv_seg.weight'].fill_(float('inf'))
    torch.save({'state_dict': state, 'meta': {}}, tmp_path / 'inf.pth')
    with pytest.raises(checkpoints.NonFiniteWeightsError, match='decode_head.conv_seg.weight'):
        MMSegInferencer(model=cfg, weights=str(tmp_path / 'inf.pth'), device='cpu')
    with pytest.raises(checkpoints.NonFiniteWeightsError):
        init_model(cfg, str(tmp_path / 'inf.pth'), device='cpu')


@pytest.mark.slow
def test_resume_with_a_changed_config_is_one_message(lip_root, tmp_path, tiny_config):
    """--resume in a work dir trained with another num_tokens: one line naming the keys,
    before mmengine's size-mismatch warning and the optimizer's RuntimeError."""
    cfg = tiny_config(tmp_path, lip_root)
    work = tmp_path / 'w'
    _train(cfg, work, *_iters(2))
    code, out = _train(cfg, work, *_iters(4), 'model.neck.num_tokens=4', resume=True,
                       expect_ok=False)
    assert code == 1 and 'Traceback' not in out, out[-3000:]
    error = out[out.index('ERROR: --resume: '):]
    assert error.startswith(f'ERROR: --resume: {work / "iter_2.pth"} was saved by a run of '
                            'another config:\n')
    assert 'keys with other shapes: neck.tokenizers' in error
    assert 'Iter(train) [3/4]' not in out


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_interrupted_run_logs_how_to_continue(lip_root, tmp_path, tiny_config, signum):
    cfg = tiny_config(tmp_path, lip_root)
    work = tmp_path / 'w'
    proc = subprocess.Popen([sys.executable, 'tools/train.py', cfg, '--work-dir', str(work),
                             '--cfg-options'] + _iters(200), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (work / 'last_checkpoint').exists():
        time.sleep(0.2)
    assert (work / 'last_checkpoint').exists()
    os.kill(proc.pid, signum)
    code = proc.wait(timeout=120)
    assert code != 0
    logs = [p for p in work.rglob('*.log')]
    text = logs[0].read_text()
    name = signal.Signals(signum).name
    line = next(ln for ln in text.splitlines() if f'{name} at iteration ' in ln)
    assert 'training stopped; last good checkpoint: ' + str(work) in line
    assert line.endswith(f'continue with: python tools/train.py {cfg} --work-dir {work} '
                         '--resume')
    if signum == signal.SIGTERM:
        assert code == -signal.SIGTERM  # ended by the signal, as without the hook
    # the next start resumes
    _, out = _train(cfg, work, *_iters(4), resume=True)
    assert 'resuming from' in out


# --- the checkpoint hook in a real (tiny, in-process) Runner ----------------------------------


class _ToyModel(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)
        self.bn = torch.nn.BatchNorm1d(1)


def _toy_runner(work_dir, max_iters=5, checkpoint=None, extra_hooks=()):
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
    hook = dict(type='CheckpointHook', interval=1, by_epoch=False, max_keep_ckpts=2)
    hook.update(checkpoint or {})
    return Runner(model=Toy(), work_dir=str(work_dir), train_dataloader=loader,
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                  train_cfg=dict(by_epoch=False, max_iters=max_iters),
                  default_hooks=dict(checkpoint=hook, logger=dict(type='LoggerHook',
                                                                  interval=100)),
                  custom_hooks=[dict(type='CheckpointSafetyHook'), *extra_hooks],
                  default_scope='mmengine', randomness=dict(seed=0))


def _hook(runner, kind):
    return next(h for h in runner.hooks if isinstance(h, kind))


def test_atomic_hook_keeps_the_newest_and_writes_last_checkpoint_last(tmp_path):
    """Every save through the atomic backend; max_keep_ckpts=2 keeps the two newest, the
    retired one removed only after its successor and last_checkpoint are complete."""
    from mmengine.hooks import CheckpointHook
    runner = _toy_runner(tmp_path / 'w')
    events = []
    original_remove = checkpoints.AtomicCheckpointHook._remove
    original_write = checkpoints.atomic_write

    def remove(self, path):
        events.append(('remove', osp.basename(path)))
        original_remove(self, path)

    def write(data, path):
        events.append(('write', osp.basename(path)))
        original_write(data, path)

    checkpoints.AtomicCheckpointHook._remove = remove
    checkpoints.atomic_write = write
    try:
        runner.train()
    finally:
        checkpoints.AtomicCheckpointHook._remove = original_remove
        checkpoints.atomic_write = original_write
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
    message = str(info.value)
    assert message.startswith('iteration 3: 10 tensors hold NaN/Inf (net.linear.weight, '
                              'net.extra0, net.extra1, net.extra2, net.extra3, net.extra4, '
                              'net.extra5, net.extra6 ... (+2 more)); the checkpoint was not '
                              f'saved. Last good checkpoint: {tmp_path / "w" / "iter_2.pth"}.')
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
    deferred = checkpoints._DeferredRemovals(backend)
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


def test_atomic_backend_writes_bytes_and_text(tmp_path):
    backend = checkpoints.AtomicLocalBackend()
    backend.put(b'bytes', tmp_path / 'a.bin')
    backend.put_text('tëxt', tmp_path / 'b.txt')
    backend.put_text('latin', tmp_path / 'c.txt', encoding='latin-1')
    assert (tmp_path / 'a.bin').read_bytes() == b'bytes'
    assert (tmp_path / 'b.txt').read_bytes() == 'tëxt'.encode('utf-8')
    assert (tmp_path / 'c.txt').read_bytes() == b'latin'
    assert sorted(os.listdir(tmp_path)) == ['a.bin', 'b.txt', 'c.txt']


@pytest.mark.parametrize('size,text', [(0, '0 B'), (1023, '1023 B'), (1024, '1.0 KiB'),
                                       (1536, '1.5 KiB'), (1024**2 - 1, '1024.0 KiB'),
                                       (1024**2, '1.0 MiB'), (3 * 1024**3, '3.0 GiB'),
                                       (1024**4, '1.0 TiB'), (5 * 1024**5, '5120.0 TiB')])
def test_human_sizes_at_unit_boundaries(size, text):
    assert checkpoints._human(size) == text


def test_last_good_checkpoint_only_names_a_file_that_exists(tmp_path):
    assert checkpoints.last_good_checkpoint(str(tmp_path)) is None
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_1.pth') + '\n')
    assert checkpoints.last_good_checkpoint(str(tmp_path)) is None
    (tmp_path / 'iter_1.pth').write_bytes(b'x')
    assert checkpoints.last_good_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_1.pth')
    (tmp_path / 'last_checkpoint').write_text('')
    assert checkpoints.last_good_checkpoint(str(tmp_path)) is None


def test_the_hook_takes_the_work_dir_lock_and_releases_it(tmp_path):
    from vt_mm.engine import workdir_lock
    runner = _toy_runner(tmp_path / 'w', max_iters=1)
    seen = []
    original = checkpoints.AtomicCheckpointHook._save_checkpoint_with_step

    def save(self, runner_, step, meta):
        seen.append(workdir_lock.held_by_this_process(runner_.work_dir))
        return original(self, runner_, step, meta)

    checkpoints.AtomicCheckpointHook._save_checkpoint_with_step = save
    try:
        runner.train()
    finally:
        checkpoints.AtomicCheckpointHook._save_checkpoint_with_step = original
    assert seen == [True]
    assert not workdir_lock.held_by_this_process(str(tmp_path / 'w'))
    # a lock the caller took (tools/train.py) stays the caller's
    workdir_lock.lock_work_dir(str(tmp_path / 'v'))
    try:
        _toy_runner(tmp_path / 'v', max_iters=1).train()
        assert workdir_lock.held_by_this_process(str(tmp_path / 'v'))
    finally:
        workdir_lock.release_work_dir(str(tmp_path / 'v'))


def test_the_hook_cleans_the_checkpoint_out_dir_too(tmp_path):
    out = tmp_path / 'ckpts'
    (out / 'w').mkdir(parents=True)
    (out / 'w' / '.iter_9.pth.tmp').write_bytes(b'x')
    (tmp_path / 'w').mkdir()
    (tmp_path / 'w' / '.iter_8.pth.tmp').write_bytes(b'x')
    runner = _toy_runner(tmp_path / 'w', max_iters=1, checkpoint=dict(out_dir=str(out)))
    runner.train()
    assert not (out / 'w' / '.iter_9.pth.tmp').exists()
    assert not (tmp_path / 'w' / '.iter_8.pth.tmp').exists()
    assert (out / 'w' / 'iter_1.pth').is_file()
