"""One training run per work dir.

Two runs that share a work dir (a re-run started while the first still runs, a resubmitted
cluster job) overwrite each other's checkpoints and ``last_checkpoint``. A run therefore holds an
OS file lock (``flock``) on ``WORK_DIR/.vt_mm_train.lock`` for as long as its process lives: the
kernel releases it when the process ends, also by SIGKILL, so a killed run never blocks the next
one. A second run stops before it writes anything, naming the holder (pid, host, start time,
command). In a distributed run only the launch's rank 0 takes it.
"""
import datetime
import fcntl
import json
import os
import os.path as osp
import socket
import sys
from typing import Dict, Optional

__all__ = ['WorkDirBusyError', 'lock_work_dir', 'release_work_dir', 'LOCK_NAME']

LOCK_NAME = '.vt_mm_train.lock'
# work dir (real path) -> the open file whose lock this process holds
_HELD: Dict[str, int] = {}


class WorkDirBusyError(RuntimeError):
    """Another live process trains in this work dir."""


# the holder's record (pid, host, start, command) is far below this
_RECORD_BYTES = 65536
_NOT_WRITTEN = 'a process that has not written its details yet'


def _holder(fd: int) -> str:
    """The holder's record, as it wrote it into the lock file."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, _RECORD_BYTES).decode())
    except (OSError, ValueError):  # empty or half written: the holder has just started
        return _NOT_WRITTEN
    if not info:
        return _NOT_WRITTEN
    return (f'pid {info.get("pid")} on host {info.get("host")}, started {info.get("started")}: '
            f'{info.get("command")}')


def lock_work_dir(work_dir: str) -> str:
    """Takes this work dir's lock for the rest of the process (again: no-op); returns the lock
    file's path. Raises :class:`WorkDirBusyError` naming the holder when another process has it;
    the work dir is created if missing (nothing else is written)."""
    real = osp.realpath(work_dir)
    path = osp.join(real, LOCK_NAME)
    if real in _HELD:
        return path
    os.makedirs(real, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise WorkDirBusyError(
            f'work dir {work_dir} is in use by another training run ({holder}). Two runs in one '
            'work dir overwrite each other\'s checkpoints: wait for that run to end (or stop '
            'it), or give this one another --work-dir. The lock is released when that process '
            'ends, however it ends.') from None
    record = dict(pid=os.getpid(), host=socket.gethostname(),
                  started=datetime.datetime.now().isoformat(timespec='seconds'),
                  command=' '.join([osp.basename(sys.executable)] + sys.argv))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    _HELD[real] = fd
    return path


def release_work_dir(work_dir: str) -> None:
    """Releases this process's lock on ``work_dir`` (if it holds one)."""
    fd = _HELD.pop(osp.realpath(work_dir), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def held_by_this_process(work_dir: str) -> bool:
    return osp.realpath(work_dir) in _HELD


def holder_pid(work_dir: str) -> Optional[int]:
    """The pid recorded in the work dir's lock file, if any (for messages and tests)."""
    try:
        with open(osp.join(work_dir, LOCK_NAME)) as f:
            return int(json.load(f).get('pid'))
    except (OSError, ValueError, TypeError):
        return None
