"""dev/check_gpu.py: the GPU check's comparisons, run on the CPU."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from helpers import ROOT


@pytest.mark.slow  # a tool or a user's program in a process of its own
def test_check_gpu_script_runs_its_comparisons_on_the_cpu():
    """dev/check_gpu.py (run on a GPU machine for benchmarks/reports/gpu.md) with ``--device cpu``:
    the same build, forward + backward and comparison code, fp32 against itself (0) and CPU
    bf16 autocast against fp32 (bf16's ~1e-2, outputs and parameter gradients); without a GPU
    the default device says so."""
    script = osp.join(ROOT, 'dev', 'check_gpu.py')
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, script, '--device', 'cpu', '--families',
                           'vt-resnet18', '--runs', '1', '--size', '96'], capture_output=True,
                          text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (row, ) = [line for line in proc.stdout.splitlines() if line.startswith('| vt-resnet18 | 96')]
    cells = [c.strip() for c in row.strip('|').split('|')]
    fp32_out, fp32_grad, bf16_out, bf16_grad = map(float, cells[2:6])
    assert fp32_out == fp32_grad == 0.0, row
    assert 1e-4 < bf16_out < 5e-2 and 1e-4 < bf16_grad < 1e-1, row
    if not torch.cuda.is_available():
        proc = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 2 and 'no CUDA device' in proc.stdout
