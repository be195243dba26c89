"""Running the repository's tools as a user does: ``python tools/...`` in a process of its own,
with the clone on PYTHONPATH and one thread."""
import os
import subprocess
import sys

from . import ROOT


def tool_env() -> dict:
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')


def run_python(args, cwd=ROOT, expect_ok=True, timeout=600):
    """(exit code, stdout + stderr) of ``python ARGS``, asserting success with ``expect_ok``."""
    proc = subprocess.run([sys.executable] + args, cwd=cwd, env=tool_env(), capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if expect_ok:
        assert proc.returncode == 0, out[-6000:]
    return proc.returncode, out


def iters(n, val=None):
    """--cfg-options for ``n`` training iterations, validating every ``val`` (default: at n)."""
    return ['--cfg-options', f'train_cfg.max_iters={n}', f'train_cfg.val_interval={val or n}']
