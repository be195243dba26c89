"""Checkpoint files that are complete or absent: atomic writes, the file backend that uses them,
the temporaries a killed save leaves, and the name of the last good checkpoint."""
import errno
import os
import os.path as osp
import re
import shutil
from typing import List, Optional

from mmengine.fileio import LocalBackend, register_backend

__all__ = ['CheckpointDiskFullError', 'atomic_write', 'temporary_path', 'AtomicLocalBackend',
           'remove_partial_files', 'last_good_checkpoint']



# what CheckpointHook's default filename_tmpl writes: iter_N.pth / epoch_N.pth
_CHECKPOINT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


class CheckpointDiskFullError(OSError):
    """No space left for a checkpoint; the partial file was removed."""

def _human(num_bytes: float) -> str:
    if abs(num_bytes) < 1024:
        return f'{num_bytes:.0f} B'
    for unit in ('KiB', 'MiB', 'GiB'):
        num_bytes /= 1024
        if abs(num_bytes) < 1024:
            return f'{num_bytes:.1f} {unit}'
    return f'{num_bytes / 1024:.1f} TiB'

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

    # the default is mmengine's; mutating its case is equivalent ('UTF-8' is 'utf-8')
    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:  # pragma: no mutate
        atomic_write(obj.encode(encoding), str(filepath))

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

def last_good_checkpoint(work_dir: str) -> Optional[str]:
    """The file ``work_dir/last_checkpoint`` names, if it exists."""
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            name = f.read().strip()
    except OSError:
        return None
    return name if name and osp.isfile(name) else None
