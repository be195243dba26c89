"""CPU distributed runs (vt_mm/engine/distributed.py): gloo, BN for SyncBN, the wrapper, rank 0
logs, the launch rank."""
import os
import os.path as osp
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from helpers import ROOT
from mmengine.config import Config

from vt_mm.engine import distributed


def _iters(n):
    return ['--cfg-options', f'train_cfg.max_iters={n}', f'train_cfg.val_interval={n}']


def test_replace_syncbn_replaces_every_sync_type_and_nothing_else():
    cfg = Config(dict(model=dict(
        backbone=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
        neck=dict(norm_cfg=dict(type='MMSyncBN')),
        heads=[dict(norm_cfg=dict(type='TorchSyncBN')), dict(norm_cfg=dict(type='GN'))],
        other=dict(norm_cfg=dict(type='BN')))))
    changed = distributed.replace_syncbn(cfg)
    assert changed == ['model.backbone.norm_cfg', 'model.neck.norm_cfg',
                       'model.heads[0].norm_cfg']
    assert cfg.model.backbone.norm_cfg == dict(type='BN', requires_grad=True)
    assert cfg.model.neck.norm_cfg.type == 'BN' and cfg.model.heads[0].norm_cfg.type == 'BN'
    assert cfg.model.heads[1].norm_cfg.type == 'GN' and cfg.model.other.norm_cfg.type == 'BN'
    assert distributed.replace_syncbn(cfg) == []


class _FakeDist:

    def __init__(self, initialized=False, rank=0):
        self.initialized, self.rank, self.backends = initialized, rank, []

    def is_initialized(self):
        return self.initialized

    def init_process_group(self, backend):
        self.backends.append(backend)
        self.initialized = True

    def get_rank(self):
        return self.rank


def test_cpu_distributed_set_up(monkeypatch):
    fake = _FakeDist()
    monkeypatch.setattr(distributed, 'dist', fake)
    cfg = Config(dict(model=dict(norm_cfg=dict(type='SyncBN')), find_unused_parameters=True))
    distributed.setup_cpu_distributed(cfg, 'none')
    assert 'env_cfg' not in cfg and fake.backends == []
    distributed.setup_cpu_distributed(cfg, 'pytorch')
    assert fake.backends == ['gloo'] and cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel',
                                         broadcast_buffers=False, find_unused_parameters=True,
                                         device_ids=None)
    assert cfg.model.norm_cfg.type == 'BN'
    # an initialised group is not initialised again; the config's own wrapper is kept
    own = Config(dict(model_wrapper_cfg=dict(type='MyWrapper', device_ids=[0]),
                      env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=5))))
    distributed.setup_cpu_distributed(own, 'pytorch')
    assert fake.backends == ['gloo']
    assert own.model_wrapper_cfg == dict(type='MyWrapper', device_ids=None)
    assert own.env_cfg.dist_cfg == dict(backend='gloo', timeout=5)
    plain = Config(dict())
    distributed.setup_cpu_distributed(plain, 'pytorch')
    assert plain.model_wrapper_cfg.find_unused_parameters is False


@pytest.mark.parametrize('launcher', ['slurm', 'mpi'])
def test_cpu_distributed_needs_torchrun(monkeypatch, launcher):
    monkeypatch.setattr(distributed, 'dist', _FakeDist())
    with pytest.raises(RuntimeError, match=rf'--launcher {launcher} on a machine without a GPU '
                       r'is not supported; use --launcher pytorch'):
        distributed.setup_cpu_distributed(Config(dict()), launcher)


def test_a_gpu_machine_keeps_mmengines_distributed_set_up(monkeypatch):
    monkeypatch.setattr(distributed, 'dist', _FakeDist())
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(model=dict(norm_cfg=dict(type='SyncBN'))))
    distributed.setup_cpu_distributed(cfg, 'slurm')
    assert cfg.model.norm_cfg.type == 'SyncBN' and 'model_wrapper_cfg' not in cfg


def test_distributed_log_lines_only_on_rank_0(monkeypatch):
    logged, loggers = [], []
    monkeypatch.setattr(distributed, 'print_log',
                        lambda msg, **kw: (logged.append(msg), loggers.append(kw)))
    monkeypatch.setattr(distributed, 'dist', _FakeDist(rank=1))
    distributed.setup_cpu_distributed(Config(dict(norm_cfg=dict(type='SyncBN'))), 'pytorch')
    assert logged == []
    monkeypatch.setattr(distributed, 'dist', _FakeDist(rank=0))
    distributed.setup_cpu_distributed(Config(dict(norm_cfg=dict(type='SyncBN'))), 'pytorch')
    assert logged == ['No GPU: env_cfg.dist_cfg.backend = gloo, model_wrapper_cfg.device_ids = '
                      'None (CPU DDP)', 'No GPU: SyncBN is replaced by BN (per-process '
                      'statistics) at norm_cfg']
    assert loggers == [dict(logger='current')] * 2  # the run's log file, not only stdout
    logged.clear()
    distributed.setup_cpu_distributed(Config(dict()), 'pytorch')
    assert len(logged) == 1
    logged.clear()
    distributed.setup_cpu_distributed(Config(dict(norm_cfg=dict(type='SyncBN'), model=dict(
        head=dict(norm_cfg=dict(type='SyncBN'))))), 'pytorch')
    assert logged[-1] == ('No GPU: SyncBN is replaced by BN (per-process statistics) at '
                          'norm_cfg, model.head.norm_cfg')


def test_finish_distributed_returns_without_a_process_group():
    assert distributed.finish_distributed() is None


def _run(args, cwd, expect_ok=True, timeout=600):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    if expect_ok:
        assert proc.returncode == 0, out[-6000:]
    return proc.returncode, out


@pytest.mark.slow
def test_dist_train_two_cpu_processes(lip_root, tmp_path, tiny_config):
    """tools/dist_train.sh CONFIG 2: torchrun + gloo on the CPU; SyncBN becomes BN, logged; the
    job exits 0 (before finish_distributed, 6 of 20 runs aborted at exit with OMP_NUM_THREADS=2)."""
    cfg = tiny_config(tmp_path, lip_root)
    with open(cfg, 'a') as f:
        f.write("model.update(decode_head=dict(norm_cfg=dict(type='SyncBN', "
                "requires_grad=True)))\n")
    env = dict(os.environ, PORT='29731',
               PATH=osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
    work = str(tmp_path / 'dist')
    proc = subprocess.run(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', work] + _iters(2),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert 'SyncBN is replaced by BN' in out
    # both ranks end with identical weights (RankConsistencyHook of the runtime base config)
    assert 'end of training: parameters identical across 2 ranks' in out, out[-3000:]
    assert "'backend': 'gloo'" in out or 'gloo' in out
    state = torch.load(osp.join(work, 'iter_2.pth'), map_location='cpu', weights_only=True)
    assert state['meta']['iter'] == 2
    # tools/dist_test.sh on 2 processes scores the whole validation set as one process does
    ckpt = osp.join(work, 'iter_2.pth')
    test_work = str(tmp_path / 'test')
    proc = subprocess.run(['bash', 'tools/dist_test.sh', cfg, ckpt, '2', '--work-dir', test_work],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    dist_out = proc.stdout + proc.stderr
    assert proc.returncode == 0, dist_out[-5000:]
    _, single_out = _run(['tools/test.py', cfg, ckpt, '--work-dir', test_work], cwd=ROOT)
    miou = [re.findall(r'mIoU: (\d+\.\d+)', o)[-1] for o in (dist_out, single_out)]
    assert miou[0] == miou[1], miou


def test_finish_distributed_ends_a_distributed_process(tmp_path):
    """train.py and test.py end with finish_distributed(): without a process group it returns;
    with one it ends the process with code 0 after flushing, before the interpreter's teardown
    (where gloo's worker thread can abort a successful rank)."""
    from vt_mm.engine import distributed
    distributed.finish_distributed()  # no group: nothing to do, no error, it returns
    script = (
        'import torch.distributed as dist\n'
        'from vt_mm.engine import distributed\n'
        f"dist.init_process_group('gloo', init_method='file://{tmp_path}/store', rank=0, "
        'world_size=1)\n'
        "print('before', end='')\n"  # buffered, no newline: must be flushed
        'distributed.finish_distributed()\n'
        "print('after')\n")
    code, out = _run(['-c', script], cwd=ROOT)
    assert code == 0 and out.startswith('before') and 'after' not in out, out


def _rank_check_worker(rank, port, diverge, results):

    import torch.distributed as dist

    from vt_mm.engine.hooks import RankConsistencyHook
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    if diverge and rank == 1:
        with torch.no_grad():
            model.bias[0] += 1e-6
    logs = []
    runner = SimpleNamespace(model=model, logger=SimpleNamespace(info=logs.append))
    try:
        RankConsistencyHook().after_train(runner)
        results[rank] = 'ok: ' + ' '.join(logs)
    except RuntimeError as e:
        results[rank] = f'error: {e}'
    dist.destroy_process_group()


@pytest.mark.slow  # two processes in a gloo group
@pytest.mark.parametrize('diverge', [False, True])
def test_rank_consistency_hook_detects_out_of_sync_ranks(diverge):
    import random as _random

    import torch.multiprocessing as mp
    results = mp.Manager().dict()
    port = 29600 + _random.randint(0, 300)
    mp.spawn(_rank_check_worker, args=(port, diverge, results), nprocs=2, join=True)
    if diverge:
        assert 'rank 1 holds different weights' in results[0] and 'bias' in results[0]
    else:
        assert 'identical across 2 ranks' in results[0] and results[1].startswith('ok')
