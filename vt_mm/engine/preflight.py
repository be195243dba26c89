"""What the train and test tools check before a run costs anything, each failure one message
(what was wrong, what to do) instead of a traceback."""
import logging
import os
import os.path as osp
from typing import List

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from .checkpoints import CheckpointUnavailableError
from .config import ConfigSyntaxError
from .data_checks import DataCheckError
from .workdir_lock import WorkDirBusyError

__all__ = ['preflight', 'preflight_value', 'check_amp', 'check_writable', 'UnwritableDirError',
           'check_reliability_hooks']



class UnwritableDirError(OSError):
    """A folder a run writes to cannot be created or written."""

def preflight(*checks) -> None:
    """Runs checks; missing or bad data or a missing checkpoint ends the program with its
    message only."""
    try:
        for check in checks:
            check()
    except (FileNotFoundError, CheckpointUnavailableError, DataCheckError, ConfigSyntaxError,
            UnwritableDirError, WorkDirBusyError) as e:
        raise SystemExit(f'ERROR: {e}') from None

def preflight_value(make):
    """``make()``, with a config error (missing file, syntax error) ending the program with its
    message only, as :func:`preflight`."""
    try:
        return make()
    except ConfigSyntaxError as e:
        raise SystemExit(f'ERROR: {e}') from None

def check_amp(amp: bool) -> None:
    if amp and not torch.cuda.is_available():
        raise SystemExit('--amp needs a GPU (mmengine AmpOptimWrapper asserts CUDA); this machine '
                         'has none. Run without --amp.')

def _check_writable(directory: str, what: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
        probe = osp.join(directory, f'.vt_mm_write_test.{os.getpid()}')
        with open(probe, 'wb') as f:
            f.write(b'x')  # pragma: no mutate (equivalent: any content probes the same)
        os.remove(probe)
    except OSError as e:
        raise UnwritableDirError(
            f'{what} {directory} cannot be written ({type(e).__name__}: {e.strerror or e}); '
            'give a folder you can write to') from None

def check_writable(cfg: Config) -> None:
    """The work dir and a local checkpoint ``out_dir`` can be created and written: checked
    before the run, instead of failing at the first save."""
    _check_writable(cfg.work_dir, '--work-dir')
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
    out_dir = checkpoint.get('out_dir')
    if out_dir and '://' not in str(out_dir):
        _check_writable(out_dir, 'default_hooks.checkpoint.out_dir')

def check_reliability_hooks(cfg) -> List[str]:
    """Logs which of vt-mm's reliability hooks the config does not declare; returns them.

    The hooks are declared by ``configs/_base_/vt_mm_runtime.py``, which every vt-mm config
    inherits, so that the toolboxes' own train tools run them too. This only reports; it
    changes nothing (a config may leave a hook out on purpose).
    """
    from .hooks import reliability_hooks
    present = {h.get('type') for h in (cfg.get('custom_hooks') or [])}
    missing = [h['type'] for h in reliability_hooks() if h['type'] not in present]
    if missing:
        print_log(f'custom_hooks has no {", ".join(missing)}: exact resume / NaN stop / rank '
                  'check / safe checkpoints are off for this run; inherit '
                  'configs/_base_/vt_mm_runtime.py to get them', logger='current',
                  level=logging.WARNING)
    return missing
