"""End to end through the CLI: tools/train.py on generated LIP-layout data, tools/test.py on the
checkpoint it wrote, --resume from it, and the errors a user meets first."""
import glob
import importlib
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _run(args, cwd, expect_ok=True, timeout=600):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    if expect_ok:
        assert proc.returncode == 0, out[-6000:]
    return proc.returncode, out


def _iters(n):
    return ['--cfg-options', f'train_cfg.max_iters={n}', f'train_cfg.val_interval={n}']


@pytest.mark.slow
def test_train_test_resume(lip_root, tmp_path, tiny_config):
    work = str(tmp_path / 'work')
    cfg = tiny_config(tmp_path, lip_root)
    _, out = _run(['tools/train.py', cfg, '--work-dir', work] + _iters(4), cwd=ROOT)
    assert osp.isfile(osp.join(work, 'iter_4.pth')), out[-3000:]
    assert 'mIoU' in out
    ckpt = osp.join(work, 'iter_4.pth')
    # the Runner checkpoint loads with torch's default weights_only=True (allow-listed types only)
    import vt_mm  # noqa: F401
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert state['meta']['iter'] == 4 and any('neck.tokenizers' in k for k in state['state_dict'])

    # test the checkpoint, with overlays and raw predictions
    vis_work = str(tmp_path / 'test')
    _, out = _run(['tools/test.py', cfg, ckpt, '--work-dir', vis_work, '--show-dir', 'vis',
                   '--out', str(tmp_path / 'preds')], cwd=ROOT)
    assert re.search(r'mIoU: \d+\.\d+', out), out[-3000:]
    overlays = glob.glob(osp.join(vis_work, 'vis', '**', '*.png'), recursive=True)
    assert len(overlays) == 3, overlays
    assert len(glob.glob(str(tmp_path / 'preds' / '*.png'))) == 3
    # flip test: original + flipped view with left/right channels swapped back
    _, out = _run(['tools/test.py', cfg, ckpt, '--work-dir', str(tmp_path / 'tta'), '--tta'],
                  cwd=ROOT)
    assert re.search(r'mIoU: \d+\.\d+', out), out[-3000:]

    # resume: continues at iteration 4 and runs to 6 with optimizer and scheduler state
    _, out = _run(['tools/train.py', cfg, '--work-dir', work, '--resume'] + _iters(6), cwd=ROOT)
    assert 'resumed' in out.lower() or 'Load checkpoint' in out, out[-3000:]
    assert 'Iter(train) [5/6]' in out and 'Iter(train) [1/6]' not in out, out[-3000:]
    assert torch.load(osp.join(work, 'iter_6.pth'), weights_only=True)['meta']['iter'] == 6


@pytest.mark.slow
def test_missing_data_root_error(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, tmp_path / 'no_such_lip')
    code, out = _run(['tools/train.py', cfg, '--work-dir', str(tmp_path)] + _iters(2), cwd=ROOT,
                     expect_ok=False)
    assert code != 0
    assert 'no_such_lip' in out and 'make_demo_lip.py' in out


@pytest.fixture
def no_network(monkeypatch):
    """Every name lookup and connection fails the test: vt-mm decides from local files only."""
    import socket
    attempts = []

    def refuse(name):
        def blocked(*args, **kwargs):
            attempts.append((name, args))
            raise AssertionError(f'network access at run time: socket.{name}{args}')
        return blocked

    for name in ('getaddrinfo', 'gethostbyname', 'gethostbyname_ex', 'create_connection'):
        monkeypatch.setattr(socket, name, refuse(name))
    monkeypatch.setattr(socket.socket, 'connect', lambda self, address: refuse('connect')(address))
    yield attempts
    assert attempts == []


def test_remote_pretrained_weights_are_judged_without_the_network(lip_root, tmp_path,
                                                                  monkeypatch, no_network):
    """configs/vtfpn_lip.py names mmseg's ImageNet ResNet-50 (open-mmlab://): with no cached
    copy, tools/train.py stops in its preflight saying where to put the file, and looks up no
    host name on the way (it used to resolve download.openmmlab.com to decide what to say)."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    from vt_mm.engine import runtime
    train = importlib.import_module('tools.train')
    roots = [f'{split}_dataloader.dataset.data_root={lip_root}' for split in ('train', 'val')]
    with pytest.raises(SystemExit) as info:
        train.main([osp.join(ROOT, 'configs', 'vtfpn_lip.py'), '--work-dir',
                    str(tmp_path / 'w'), '--cfg-options'] + roots)
    message = str(info.value)
    url = runtime.remote_url('open-mmlab://resnet50_v1c')
    assert message.startswith("ERROR: model.pretrained = 'open-mmlab://resnet50_v1c' is not on "
                              f'this machine (it downloads from {url}).')
    assert str(tmp_path / 'torch' / 'hub' / 'checkpoints' / osp.basename(url)) in message
    assert '--cfg-options model.pretrained=/path/to/file.pth' in message
    cfg = runtime.read_config(osp.join(ROOT, 'configs', 'vtfpn_lip.py'))
    cfg.model.pretrained = str(tmp_path / 'missing.pth')
    with pytest.raises(runtime.CheckpointUnavailableError, match='no such file'):
        runtime.check_checkpoints(cfg)
    cfg.model.pretrained = None
    runtime.check_checkpoints(cfg)
    for ref in ('s3://bucket/w.pth', 'pavi://w'):  # left to mmengine's storage backends
        runtime.check_checkpoints(runtime.Config(dict(load_from=ref)))


def test_warm_torch_hub_cache_satisfies_the_preflight(tmp_path, monkeypatch, no_network):
    """Offline, a checkpoint mmengine would take from torch hub's cache passes the preflight,
    for every scheme mmengine resolves (open-mmlab:// used to map to no file)."""
    import torch
    from mmengine.config import Config

    from vt_mm.engine import runtime
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    refs = {
        'open-mmlab://resnet50_v1c': 'resnet50_v1c-2cccc1ad.pth',
        'torchvision://resnet50': 'resnet50-0676ba61.pth',
        'https://example.org/weights/model-123.pth': 'model-123.pth',
    }
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    assert torch.hub.get_dir() == str(tmp_path / 'torch' / 'hub')
    for ref, name in refs.items():
        cfg = Config(dict(model=dict(pretrained=ref)))
        with pytest.raises(runtime.CheckpointUnavailableError,
                           match=f'put it at {cache / name} '):
            runtime.check_checkpoints(cfg)  # cold cache: refused with the way out
        cache.mkdir(parents=True, exist_ok=True)
        (cache / name).write_bytes(b'x')
        assert runtime._cached_path(ref) == str(cache / name)
        runtime.check_checkpoints(cfg)  # warm cache: mmengine would load it, so no error
    with pytest.raises(runtime.CheckpointUnavailableError, match='mmengine knows no URL for it'):
        runtime.check_checkpoints(Config(dict(load_from='open-mmlab://no_such_model')))


@pytest.mark.slow
def test_amp_on_cpu_is_refused(lip_root, tmp_path, tiny_config):
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    cfg = tiny_config(tmp_path, lip_root)
    code, out = _run(['tools/train.py', cfg, '--amp', '--work-dir', str(tmp_path)] + _iters(2),
                     cwd=ROOT, expect_ok=False)
    assert code != 0 and '--amp needs a GPU' in out


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
    from vt_mm.engine import runtime
    runtime.finish_distributed()  # no group: nothing to do, no error, it returns
    script = (
        'import torch.distributed as dist\n'
        'from vt_mm.engine import runtime\n'
        f"dist.init_process_group('gloo', init_method='file://{tmp_path}/store', rank=0, "
        'world_size=1)\n'
        "print('before', end='')\n"  # buffered, no newline: must be flushed
        'runtime.finish_distributed()\n'
        "print('after')\n")
    code, out = _run(['-c', script], cwd=ROOT)
    assert code == 0 and out.startswith('before') and 'after' not in out, out
