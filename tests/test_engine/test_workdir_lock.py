"""One run per work dir (vt_mm/engine/workdir_lock.py): a second run stops before it writes
anything, naming the holder; a killed holder never blocks the next run; ranks other than 0 take
no lock."""
import json
import os
import os.path as osp
import signal
import subprocess
import sys

import pytest
from helpers import ROOT

from vt_mm.engine import distributed, workdir_lock
from vt_mm.engine.workdir_lock import LOCK_NAME, WorkDirBusyError, lock_work_dir

# The lock module alone (it imports nothing of vt_mm), loaded by path: another process in a
# tenth of a second instead of the seconds that importing vt_mm's toolboxes takes.
LOAD_LOCK = ('import importlib.util, sys\n'
             'spec = importlib.util.spec_from_file_location(\n'
             f'    "workdir_lock", {workdir_lock.__file__!r})\n'
             'lock = importlib.util.module_from_spec(spec)\n'
             'spec.loader.exec_module(lock)\n')
HOLDER = (LOAD_LOCK + 'import time\n'
          'lock.lock_work_dir(sys.argv[1])\n'
          'print("locked", flush=True)\n'
          'time.sleep(600)\n')


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/'work'."""
    work = tmp_path / 'work'
    proc = subprocess.Popen([sys.executable, '-c', HOLDER, str(work)], env=_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'locked'
    yield work, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_process_is_refused_naming_the_holder(holder):
    work, proc = holder
    with pytest.raises(WorkDirBusyError) as info:
        lock_work_dir(str(work))
    message = str(info.value)
    record = json.loads((work / LOCK_NAME).read_text())
    assert record['pid'] == proc.pid and record['host'] == os.uname().nodename
    assert message.startswith(f'work dir {work} is in use by another training run (pid '
                              f'{proc.pid} on host {record["host"]}, started '
                              f'{record["started"]}: ')
    assert '-c' in record['command'] and 'another --work-dir' in message
    assert not workdir_lock.held_by_this_process(str(work))


def test_a_killed_holder_never_blocks_the_next_run(holder):
    work, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    path = lock_work_dir(str(work))
    try:
        assert path == osp.join(osp.realpath(work), LOCK_NAME)
        assert json.loads((work / LOCK_NAME).read_text())['pid'] == os.getpid()
        assert workdir_lock.holder_pid(str(work)) == os.getpid()
        assert lock_work_dir(str(work)) == path  # again in the same process: a no-op
    finally:
        workdir_lock.release_work_dir(str(work))
    assert not workdir_lock.held_by_this_process(str(work))
    workdir_lock.release_work_dir(str(work))  # releasing twice is harmless


def test_train_tool_stops_before_writing_anything(holder, tmp_path, lip_root, tiny_config):
    """tools/train.py on a work dir another run holds: one line naming the holder, exit 1, and
    the work dir holds only what it held (no log folder, no checkpoint)."""
    work, proc = holder
    before = sorted(os.listdir(work))
    cfg = tiny_config(tmp_path, lip_root)
    run = subprocess.run([sys.executable, 'tools/train.py', cfg, '--work-dir', str(work)],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(
        f'ERROR: work dir {work} is in use by another training run (pid {proc.pid} ')
    assert 'Traceback' not in run.stderr
    assert sorted(os.listdir(work)) == before


@pytest.mark.parametrize('env,rank', [
    ({}, 0), ({'RANK': '0'}, 0), ({'RANK': '1'}, 1), ({'SLURM_PROCID': '3'}, 3),
    ({'OMPI_COMM_WORLD_RANK': '2'}, 2), ({'PMI_RANK': '4'}, 4),
    ({'RANK': '1', 'SLURM_PROCID': '0'}, 1), ({'RANK': '12'}, 12), ({'RANK': 'x'}, 0),
    ({'RANK': ' 2 '}, 2), ({'RANK': '-1', 'SLURM_PROCID': '5'}, 5), ({'RANK': '-1'}, 0)])
def test_launch_rank_from_the_launchers_variables(env, rank, monkeypatch):
    for name in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK'):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.launch_rank() == rank


@pytest.mark.parametrize('rank', ['0', '1'])
def test_only_rank_zero_locks_in_the_train_tool(holder, tmp_path, tiny_config, monkeypatch,
                                                rank):
    """A distributed run takes the lock once: with another run holding the work dir, rank 0
    stops at the lock, rank 1 goes past it (here to the missing data it then reports)."""
    import importlib
    work, proc = holder
    monkeypatch.setenv('RANK', rank)
    train = importlib.import_module('tools.train')
    cfg = tiny_config(tmp_path, tmp_path / 'no_data')
    with pytest.raises(SystemExit) as info:
        train.main([cfg, '--work-dir', str(work)])
    if rank == '0':
        assert str(info.value).startswith(f'ERROR: work dir {work} is in use')
    else:
        assert "data_root" in str(info.value) and 'no_data' in str(info.value)


def test_holder_details_while_the_holder_writes_them(tmp_path):
    """A lock file without a record yet (the holder between flock and write) is described as
    such, not as a crash."""
    import fcntl
    work = tmp_path / 'w'
    work.mkdir()
    fd = os.open(work / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    script = (LOAD_LOCK +
              'try:\n    lock.lock_work_dir(sys.argv[1])\nexcept Exception as e:\n    print(e)\n')
    try:
        out = subprocess.run([sys.executable, '-c', script, str(work)], env=_env(),
                             capture_output=True, text=True, timeout=60).stdout
    finally:
        os.close(fd)
    assert 'a process that has not written its details yet' in out
    lock_work_dir(str(work))
    workdir_lock.release_work_dir(str(work))


def test_holder_record_as_written_or_not_yet(tmp_path):
    """What a refused run is told about the holder: its record, or that it has none yet
    (an empty file, or one whose record does not parse)."""
    path = tmp_path / LOCK_NAME
    for text in ('', '{"pid": 1, ', '{}'):
        path.write_text(text)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert workdir_lock._holder(fd) == 'a process that has not written its details yet'
        finally:
            os.close(fd)
    path.write_text(json.dumps(dict(pid=42, host='h', started='t', command='python train.py')))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 5, os.SEEK_SET)  # read from the start whatever the position
        assert workdir_lock._holder(fd) == 'pid 42 on host h, started t: python train.py'
    finally:
        os.close(fd)
