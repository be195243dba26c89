"""Reliability: exact resume after SIGKILL, NaN stop, flip test, and the bad-input table rows that
go through the CLI (docs/bad_input.md)."""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import vt_mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')


def _run(args, expect_ok=True, timeout=600):
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if expect_ok:
        assert proc.returncode == 0, out[-6000:]
    return proc.returncode, out


def _iters(n, val=None):
    return ['--cfg-options', f'train_cfg.max_iters={n}', f'train_cfg.val_interval={val or n}']


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(lip_root, tmp_path, tiny_config):
    """Kill a run between checkpoints, --resume it, and land on the uninterrupted run's weights."""
    cfg = tiny_config(tmp_path, lip_root, deterministic=True)
    total = 8
    # reference: uninterrupted
    _run(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'ref')] + _iters(total, 100))
    # interrupted: same config but a long schedule, SIGKILLed once iter_4.pth is complete
    work = tmp_path / 'killed'
    proc = subprocess.Popen([sys.executable, 'tools/train.py', cfg, '--work-dir', str(work)] +
                            _iters(total, 100), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = work / 'last_checkpoint'  # written after the checkpoint file is complete
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if marker.exists() and marker.read_text().strip().endswith(('iter_4.pth', 'iter_6.pth')):
            break
        time.sleep(0.05)
    assert proc.poll() is None, 'the run ended before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work / f'iter_{total}.pth').exists()
    last = marker.read_text().strip()
    resumed_from = int(osp.basename(last)[len('iter_'):-len('.pth')])
    _, out = _run(['tools/train.py', cfg, '--work-dir', str(work), '--resume'] +
                  _iters(total, 100))
    assert f'Iter(train) [{resumed_from + 1}/{total}]' in out
    assert 'Iter(train) [1/' not in out  # continued, not restarted

    ref = _weights(tmp_path / 'ref' / f'iter_{total}.pth')
    res = _weights(work / f'iter_{total}.pth')
    assert ref['meta']['iter'] == res['meta']['iter'] == total
    for key, value in ref['state_dict'].items():
        assert torch.equal(value, res['state_dict'][key]), key
    # optimizer and scheduler state too
    ref_opt, res_opt = ref['optimizer']['state'], res['optimizer']['state']
    assert ref_opt.keys() == res_opt.keys()
    for k in ref_opt:
        for name, v in ref_opt[k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(res_opt[k][name])), (k, name)
    assert ref['param_schedulers'] == res['param_schedulers']


def test_resume_rng_hook_round_trip():
    import random
    from types import SimpleNamespace

    import numpy as np

    from vt_mm.engine.hooks import ResumeRNGHook
    hook = ResumeRNGHook()
    checkpoint = {}
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    hook.before_save_checkpoint(None, checkpoint)
    expected = (torch.rand(3), random.random(), np.random.rand())
    # a resumed process: other states, then the hook restores at the first iteration
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    hook.after_load_checkpoint(None, torch.load(_save(checkpoint), weights_only=True))
    # an iteration-based loop resumed at iteration 2: the two skipped batches draw random
    # numbers; the state must be back before the third batch is drawn
    draws = []

    def batches():
        while True:
            draws.append((torch.rand(3), random.random(), np.random.rand()))
            yield len(draws)

    loop = SimpleNamespace(_iter=2, dataloader_iterator=batches())
    hook.before_train(SimpleNamespace(train_loop=loop))
    assert [next(loop.dataloader_iterator) for _ in range(3)] == [1, 2, 3]
    got = draws[2]
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
    assert not torch.equal(draws[0][0], expected[0])


def test_resume_rng_hook_restores_epoch_based_loops_at_once():
    """Guards against the epoch-based branch skipping the restore: an epoch loop has no
    dataloader iterator to fast-forward, so the state is back before the first batch."""
    import random
    from types import SimpleNamespace

    from vt_mm.engine.hooks import ResumeRNGHook
    hook = ResumeRNGHook()
    checkpoint = {}
    torch.manual_seed(5)
    random.seed(5)
    hook.before_save_checkpoint(None, checkpoint)
    expected = (torch.rand(2), random.random())
    torch.manual_seed(1)
    random.seed(1)
    hook.after_load_checkpoint(None, torch.load(_save(checkpoint), weights_only=True))
    hook.before_train(SimpleNamespace(train_loop=SimpleNamespace(_epoch=3, _iter=30)))
    got = (torch.rand(2), random.random())
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]


def _save(obj):
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


@pytest.mark.parametrize('bad', ['nan', 'inf', '-inf'])
def test_nonfinite_loss_hook_message(bad, tmp_path):
    """NaN and both infinities stop training (guards against a hook that tests isnan only)."""
    from types import SimpleNamespace

    from vt_mm.engine.hooks import NonFiniteLossError, NonFiniteLossHook
    (tmp_path / 'iter_40.pth').write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_40.pth'))
    runner = SimpleNamespace(iter=41, epoch=0, work_dir=str(tmp_path))
    hook = NonFiniteLossHook()
    hook.after_train_iter(runner, 0, outputs=dict(loss=torch.tensor(1.5)))
    with pytest.raises(NonFiniteLossError,
                       match=rf'iteration 42.*loss_ce={bad}.*iter_40.pth.*lower lr'):
        hook.after_train_iter(runner, 0, outputs=dict(loss=torch.tensor(float(bad)),
                                                      loss_ce=torch.tensor(float(bad))))


@pytest.mark.slow
def test_nan_loss_stops_training_with_a_message(lip_root, tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, lip_root, deterministic=True)
    code, out = _run(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w')] + _iters(4) +
                     ['model.decode_head.loss_decode.loss_weight=1e39'], expect_ok=False)
    assert code != 0
    assert 'NonFiniteLossError: Loss became non-finite at iteration 1' in out, out[-3000:]
    assert not (tmp_path / 'w' / 'iter_2.pth').exists()


@pytest.mark.slow
def test_num_classes_mismatch_is_refused(lip_root, tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, lip_root, deterministic=True)
    code, out = _run(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w')] + _iters(2) +
                     ['model.decode_head.num_classes=19'], expect_ok=False)
    assert code != 0
    assert 'model.decode_head.num_classes=19 but the training dataset (LIPDataset) has 20' in out


@pytest.mark.slow
def test_truncated_image_error_names_the_file(lip_root, tmp_path, tiny_config):
    import shutil
    root = tmp_path / 'lip'
    shutil.copytree(lip_root, root)
    images = sorted((root / 'TrainVal_images' / 'train_images').glob('*.jpg'))
    data = images[0].read_bytes()
    images[0].write_bytes(data[:len(data) // 2])  # a truncated download
    cfg = tiny_config(tmp_path, root, deterministic=True)
    code, out = _run(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w')] + _iters(8),
                     expect_ok=False)
    assert code != 0
    # the preflight reads the first samples before training starts
    assert f'{images[0]}' in out and 'cannot be read' in out, out[-3000:]
    assert 'Iter(train)' not in out


@pytest.mark.slow
def test_checkpoint_of_another_architecture_is_listed(lip_root, tmp_path, tiny_config):
    from vt_mm.models.backbones import VTResNet
    cfg = tiny_config(tmp_path, lip_root, deterministic=True)
    other = tmp_path / 'vt_resnet18.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in VTResNet(18).state_dict().items()}},
               other)
    code, out = _run(['tools/test.py', cfg, str(other), '--work-dir', str(tmp_path / 't')],
                     expect_ok=False)
    assert code != 0
    assert 'does not fit the model of this config' in out
    assert re.search(r'\d+ missing keys: backbone\.layer4\.', out), out[-3000:]
    assert re.search(r'\d+ unexpected keys: .*backbone\.vt_modules\.', out)


def test_flip_tta_keeps_left_arm_left():
    """Original view: weakly left arm; flipped view (already flipped back spatially): strongly
    'right arm', because in the mirrored image that arm is a right arm. Swapping the flipped
    view's channels gives left arm; plain averaging (mmseg SegTTAModel) would give right arm."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'vtfpn_lip.py'))
    assert cfg.tta_model.type == 'FlipSwapSegTTAModel'
    assert cfg.tta_model.swap_pairs == [[14, 15], [16, 17], [18, 19]]
    cfg.model.pretrained = None
    cfg.model.backbone.norm_cfg = cfg.model.decode_head.norm_cfg = dict(type='BN')

    def views():
        out = []
        for flip, left, right in ((False, 1.0, 0.5), (True, 0.0, 3.0)):
            logits = torch.zeros(20, 2, 2)
            logits[14], logits[15] = left, right
            sample = SegDataSample(metainfo=dict(flip=flip, flip_direction='horizontal',
                                                 img_path='x.jpg'))
            sample.seg_logits = PixelData(data=logits)
            out.append(sample)
        return [out]

    tta = MODELS.build(dict(cfg.tta_model, module=cfg.model))
    pred = tta.merge_preds(views())[0].pred_sem_seg.data
    assert (pred == 14).all()
    plain = MODELS.build(dict(type='SegTTAModel', module=cfg.model))
    assert (plain.merge_preds(views())[0].pred_sem_seg.data == 15).all()


@pytest.mark.parametrize('name,size,ok', [
    ('VTResNet', 1, True), ('VTResNet', 33, True), ('SeaFormer', 1, True), ('SeaFormer', 33, True),
    ('PyramidTNT', 16, False), ('PyramidTNT', 24, False), ('PyramidTNT', 25, True),
    ('PyramidTNT', 33, True)])
def test_smallest_inputs_row_of_the_table(name, size, ok):
    """VT-ResNet and SeaFormer take any size (the coarsest maps shrink to 1x1); PyramidTNT needs
    25 px (zero-padded to 32, whose first-stage grid holds one spatial-reduction window) and
    says so."""
    from vt_mm.models import backbones
    model = {'VTResNet': lambda: backbones.VTResNet(18),
             'SeaFormer': lambda: backbones.SeaFormer('t'),
             'PyramidTNT': lambda: backbones.PyramidTNT('ti')}[name]()
    model.eval()
    x = torch.randn(1, 3, size, size)
    if ok:
        with torch.no_grad():
            assert all(torch.isfinite(o).all() for o in model(x))
    else:
        with pytest.raises(ValueError, match='too small .*need at least 25 pixels'):
            model(x)


def _rank_check_worker(rank, port, diverge, results):
    from types import SimpleNamespace

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
