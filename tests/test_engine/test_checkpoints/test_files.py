"""Checkpoint files (vt_mm/engine/checkpoints/files.py): atomic writes, a full disk, the
temporaries a killed save leaves, sizes in messages, the last good checkpoint."""
import errno
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT

from vt_mm.engine import checkpoints
from vt_mm.engine.checkpoints import (
    CheckpointDiskFullError,
    atomic_write,
    files,
)


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
    monkeypatch.setattr(files.shutil, 'disk_usage', lambda d: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(CheckpointDiskFullError, match=r'100 B free, the file needs 1000 B'):
        atomic_write(b'y' * 1000, str(tmp_path / 'iter_4.pth'))
    assert os.listdir(tmp_path) == []


def test_partial_files_are_the_checkpoint_temporaries_of_dead_processes_only(tmp_path):
    """A killed save leaves .iter_N.pth.PID.tmp (or .last_checkpoint.PID.tmp): removed when that
    process is gone, kept while it lives (a live writer), never anything else."""
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True).stdout.strip()
    # a live process of the test's own (not the runner's parent: a mutant that signals the pid
    # instead of probing it would kill the test runner, or mutmut itself)
    writer = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
    alive = writer.pid
    removable = [f'.iter_4.pth.{dead}.tmp', f'.epoch_12.pth.{dead}.tmp',
                 f'.last_checkpoint.{dead}.tmp', '.iter_1000.pth.tmp', '.last_checkpoint.tmp']
    kept = [f'.iter_6.pth.{alive}.tmp', f'.iter_7.pth.{os.getpid()}.tmp', '.notes.tmp',
            'iter_4.pth', '.iter_4.pth',
            'iter_4.pth.tmp', f'.iter_4.pth.{dead}.bak', f'.iter_x.pth.{dead}.tmp',
            f'.best.pth.{dead}.tmp']
    for name in removable + kept:
        (tmp_path / name).write_bytes(b'x')
    try:
        removed = checkpoints.remove_partial_files(str(tmp_path))
        assert writer.poll() is None  # probed, not signalled
    finally:
        writer.kill()
        writer.wait()
    assert sorted(removed) == sorted(removable)
    assert sorted(os.listdir(tmp_path)) == sorted(kept)
    assert checkpoints.remove_partial_files(str(tmp_path / 'missing')) == []


def test_a_temporary_of_another_users_live_process_is_kept(tmp_path, monkeypatch):
    """Probing another user's process raises PermissionError: it lives, so its temporary
    stays; a process that is gone (ProcessLookupError) leaves its temporary to be removed."""
    from vt_mm.engine.checkpoints import files

    def kill(pid, signum):
        assert signum == 0  # a probe, never a signal
        raise PermissionError if pid == 4242 else ProcessLookupError

    monkeypatch.setattr(files.os, 'kill', kill)
    for name in ('.iter_4.pth.4242.tmp', '.iter_5.pth.4343.tmp'):
        (tmp_path / name).write_bytes(b'x')
    assert checkpoints.remove_partial_files(str(tmp_path)) == ['.iter_5.pth.4343.tmp']
    assert os.listdir(tmp_path) == ['.iter_4.pth.4242.tmp']


def test_temporary_names_are_unique_per_process(tmp_path):
    path = str(tmp_path / 'iter_4.pth')
    assert checkpoints.temporary_path(path) == str(tmp_path / f'.iter_4.pth.{os.getpid()}.tmp')
    other = subprocess.run(
        [sys.executable, '-c', 'import sys; from vt_mm.engine.checkpoints import temporary_path;'
         ' print(temporary_path(sys.argv[1]))', path], capture_output=True, text=True,
        env=_env()).stdout.strip()
    assert other != checkpoints.temporary_path(path) and other.endswith('.tmp')


def test_atomic_backend_writes_bytes_and_text(tmp_path):
    backend = checkpoints.AtomicLocalBackend()
    backend.put(b'bytes', tmp_path / 'a.bin')
    backend.put_text('tëxt', tmp_path / 'b.txt')
    backend.put_text('latin', tmp_path / 'c.txt', encoding='latin-1')
    assert (tmp_path / 'a.bin').read_bytes() == b'bytes'
    assert (tmp_path / 'b.txt').read_bytes() == 'tëxt'.encode('utf-8')
    assert (tmp_path / 'c.txt').read_bytes() == b'latin'
    assert sorted(os.listdir(tmp_path)) == ['a.bin', 'b.txt', 'c.txt']


def test_atomic_backend_keeps_the_signatures_of_mmengines_backend():
    """mmengine's FileClient and CheckpointHook call the backend positionally and by keyword as
    they call their LocalBackend: the override keeps each signature and default."""
    import inspect

    from mmengine.fileio.backends import LocalBackend
    def parameters(function):
        return [(p.name, p.kind, p.default)
                for p in inspect.signature(function).parameters.values()]

    for name in ('put', 'put_text'):
        assert parameters(getattr(checkpoints.AtomicLocalBackend, name)) == \
            parameters(getattr(LocalBackend, name)), name
    assert inspect.signature(LocalBackend.put_text).parameters['encoding'].default == 'utf-8'


@pytest.mark.parametrize('size,text', [(0, '0 B'), (1023, '1023 B'), (1024, '1.0 KiB'),
                                       (1536, '1.5 KiB'), (1024**2 - 1, '1024.0 KiB'),
                                       (1024**2, '1.0 MiB'), (3 * 1024**3, '3.0 GiB'),
                                       (1024**4, '1.0 TiB'), (5 * 1024**5, '5120.0 TiB')])
def test_human_sizes_at_unit_boundaries(size, text):
    assert files._human(size) == text


def test_last_good_checkpoint_only_names_a_file_that_exists(tmp_path):
    assert checkpoints.last_good_checkpoint(str(tmp_path)) is None
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_1.pth') + '\n')
    assert checkpoints.last_good_checkpoint(str(tmp_path)) is None
    (tmp_path / 'iter_1.pth').write_bytes(b'x')
    assert checkpoints.last_good_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_1.pth')
    (tmp_path / 'last_checkpoint').write_text('')
    assert checkpoints.last_good_checkpoint(str(tmp_path)) is None


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


def test_disk_full_message_uses_the_free_space_measured_before_writing(tmp_path, monkeypatch):
    """The free space of the check that refused the write is the one reported (the disk can
    change in between); the message says every way out."""
    import collections
    usage = collections.namedtuple('usage', 'total used free')
    readings = iter([100, 5000, 5000])
    monkeypatch.setattr(files.shutil, 'disk_usage',
                        lambda d: usage(10**6, 0, next(readings)))
    with pytest.raises(CheckpointDiskFullError) as info:
        atomic_write(b'y' * 1000, str(tmp_path / 'iter_4.pth'))
    assert info.value.strerror == (
        f'no space left in {tmp_path} to save iter_4.pth: 100 B free, the file needs 1000 B; '
        'nothing partial was left, and the previous checkpoint is intact. Free space there, '
        'lower default_hooks.checkpoint.max_keep_ckpts, or set --work-dir (or '
        'default_hooks.checkpoint.out_dir) to a disk with room, then resume with --resume')
    assert files._disk_full(str(tmp_path), 'x', 10, free=7).strerror.startswith(
        f'no space left in {tmp_path} to save x: 7 B free, the file needs 10 B;')


def test_atomic_write_at_the_free_space_boundary_and_in_the_current_folder(tmp_path,
                                                                            monkeypatch):
    import collections
    usage = collections.namedtuple('usage', 'total used free')
    monkeypatch.setattr(files.shutil, 'disk_usage', lambda d: usage(10**6, 0, 1000))
    atomic_write(b'z' * 1000, str(tmp_path / 'exact.bin'))  # exactly what is free: written
    assert (tmp_path / 'exact.bin').stat().st_size == 1000
    with pytest.raises(CheckpointDiskFullError):
        atomic_write(b'z' * 1001, str(tmp_path / 'over.bin'))
    monkeypatch.chdir(tmp_path)
    atomic_write(b'here', 'bare_name')  # no folder in the name: the current one
    assert (tmp_path / 'bare_name').read_bytes() == b'here'


def test_liveness_of_writers_and_that_asking_harms_no_process():
    """A live process's temporaries are kept; asking whether it lives must not signal it (the
    check sends signal 0)."""
    import time
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])
    try:
        assert files._alive(child.pid) is True
        time.sleep(0.2)
        assert child.poll() is None  # still running: nothing was sent
        assert files._alive(os.getpid()) is True
    finally:
        child.kill()
        child.wait()
    assert files._alive(child.pid) is False
