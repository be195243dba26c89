"""tools/train.py and tools/test.py end to end, for mmseg (generated LIP data), mmdet and
mmpretrain configs, and the toolboxes' own tools with vt-mm configs."""
import glob
import os.path as osp
import pickle
import re

import pytest
import torch
from helpers import ROOT
from helpers.tools import iters, run_python, tool_env

_env = tool_env
_run = run_python
_iters = iters


@pytest.mark.slow
def test_train_test_resume(lip_root, tmp_path, tiny_config):
    work = str(tmp_path / 'work')
    cfg = tiny_config(tmp_path, lip_root)
    _, out = _run(['tools/train.py', cfg, '--work-dir', work] + _iters(4), cwd=ROOT)
    assert osp.isfile(osp.join(work, 'iter_4.pth')), out[-3000:]
    assert 'mIoU' in out
    ckpt = osp.join(work, 'iter_4.pth')
    # the Runner checkpoint loads with torch's default weights_only=True (allow-listed types only)
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


@pytest.mark.slow
def test_amp_on_cpu_is_refused(lip_root, tmp_path, tiny_config):
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    cfg = tiny_config(tmp_path, lip_root)
    code, out = _run(['tools/train.py', cfg, '--amp', '--work-dir', str(tmp_path)] + _iters(2),
                     cwd=ROOT, expect_ok=False)
    assert code != 0 and '--amp needs a GPU' in out



RUNTIME_CFG = osp.join(ROOT, 'configs', '_base_', 'vt_mm_runtime.py')


RETINANET_VTFPN = """
# mmdet's own RetinaNet config; the neck is VT-FPN (P3-P5 from C3-C5, P6/P7 on the input).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', {runtime!r}]
model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(_delete_=True, type='VTFPN', in_channels=[64, 128, 256, 512], out_channels=64,
              start_level=1, add_extra_convs='on_input', num_outs=5, num_tokens=4,
              token_channels=64),
    bbox_head=dict(num_classes=3, in_channels=64, feat_channels=64))
{data}train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
"""


RESNET_CLS = """
_base_ = ['mmpretrain::_base_/models/resnet18.py', 'mmpretrain::_base_/default_runtime.py',
          {runtime!r}]
data_root = {root!r}
model = dict(head=dict(num_classes=3, topk=(1, )))
data_preprocessor = dict(num_classes=3, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', scale=56),
                  dict(type='PackInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='CenterCrop', crop_size=56),
                 dict(type='PackInputs')]
train_dataloader = dict(batch_size=4, num_workers=0,
                        sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                                     pipeline=train_pipeline))
val_dataloader = dict(batch_size=4, num_workers=0,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='val',
                                   pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
val_cfg = dict()
test_cfg = dict()
"""


@pytest.mark.slow
def test_mmdet_retinanet_with_vtfpn_train_and_test(tmp_path):
    from vt_mm.datasets.demo_shapes import coco_data_config, make_demo_coco
    data = tmp_path / 'coco'
    make_demo_coco(str(data), 'train', num_images=4, seed=0)
    make_demo_coco(str(data), 'val', num_images=2, seed=1)
    cfg = tmp_path / 'retinanet_vtfpn.py'
    cfg.write_text(RETINANET_VTFPN.format(runtime=RUNTIME_CFG, data=coco_data_config(
        str(data), scale=(128, 96), batch_size=2, val_batch_size=1)))
    work = tmp_path / 'work'
    _, out = _run(['tools/train.py', str(cfg), '--work-dir', str(work)])
    assert 'Epoch(train) [1][2/2]' in out
    # 2 iterations from scratch rarely clear the score threshold: mmdet then reports empty results
    evaluated = ('coco/bbox_mAP', 'testing results of the whole dataset is empty')
    assert any(e in out for e in evaluated), out[-3000:]
    ckpt = str(work / 'epoch_1.pth')
    _, out = _run(['tools/test.py', str(cfg), ckpt, '--work-dir', str(work / 'test'),
                '--show-dir', 'vis', '--out', str(tmp_path / 'dets.pkl')])
    assert any(e in out for e in evaluated), out[-3000:]
    assert len(glob.glob(str(work / 'test' / '*' / 'vis' / '*.jpg'))) == 2
    with open(tmp_path / 'dets.pkl', 'rb') as f:
        dets = pickle.load(f)
    assert len(dets) == 2 and 'pred_instances' in dets[0]


@pytest.mark.slow
def test_mmpretrain_classifier_train_and_test(tmp_path):
    from vt_mm.datasets.demo_shapes import make_demo_imagefolder
    data = tmp_path / 'shapes'
    make_demo_imagefolder(str(data), 'train', per_class=4, seed=0)
    make_demo_imagefolder(str(data), 'val', per_class=2, seed=1)
    cfg = tmp_path / 'resnet18_shapes.py'
    cfg.write_text(RESNET_CLS.format(root=str(data), runtime=RUNTIME_CFG))
    work = tmp_path / 'work'
    _, out = _run(['tools/train.py', str(cfg), '--work-dir', str(work)])
    assert 'accuracy/top1' in out
    _, out = _run(['tools/test.py', str(cfg), str(work / 'epoch_1.pth'), '--work-dir',
                str(work / 'test'), '--out', str(tmp_path / 'preds.pkl')])
    assert 'accuracy/top1' in out
    with open(tmp_path / 'preds.pkl', 'rb') as f:
        assert len(pickle.load(f)) == 6


@pytest.mark.slow
def test_mmseg_own_tools_with_a_config_inheriting_vt_mm_by_path(lip_root, tmp_path, tiny_config):
    """README: mmseg's own tools/train.py parses ``_base_`` before ``custom_imports``, so a
    user's config inherits a vt-mm config by its path (here the demo's); it then trains with
    vt-mm's modules and with the hooks its runtime base declares. mmseg's analyze_logs.py
    (seaborn, requirements/tools.txt) plots that run's log; vt-mm's browse_dataset.py draws its
    training samples (mmseg's own fails on every config with OpenCV 5: see the tool)."""
    import mmseg
    mmseg_tools = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools')
    # _base_ = ['<repository>/configs/demo/vtfpn_r50_lip-demo-128x128.py']
    cfg = tiny_config(tmp_path, lip_root)
    work = tmp_path / 'work'
    _, out = _run([osp.join(mmseg_tools, 'train.py'), cfg, '--work-dir', str(work),
                '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2'])
    assert 'Iter(train) [2/2]' in out and 'mIoU' in out, out[-3000:]
    for hook in ('ResumeRNGHook', 'CheckpointSafetyHook', 'NetworkCompileHook'):
        assert hook in out, hook  # mmengine lists the registered hooks
    assert (work / 'iter_2.pth').is_file()

    (log, ) = glob.glob(str(work / '*' / 'vis_data' / '[0-9]*.json'))  # mmengine's json log
    plot = tmp_path / 'loss.png'
    _, out = _run([osp.join(mmseg_tools, 'analysis_tools', 'analyze_logs.py'), log, '--keys',
                'loss', '--out', str(plot)])
    assert plot.stat().st_size > 1000, out[-2000:]

    drawn = tmp_path / 'browse'
    _, out = _run(['tools/analysis_tools/browse_dataset.py', cfg, '--not-show', '--output-dir',
                str(drawn)])
    assert '8 samples drawn' in out, out[-2000:]
    assert len(list(drawn.glob('*.jpg'))) == 8


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
