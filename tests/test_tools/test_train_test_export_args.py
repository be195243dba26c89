"""Argument handling of tools/train.py, tools/test.py and tools/deployment/export.py, in process
(no training): every precedence both ways, every default a user relies on pinned by value, and
each refusal's message."""
import importlib
import os
import os.path as osp
import re

import pytest
from helpers import DEMO_CONFIG, ROOT

DEMO = DEMO_CONFIG


RETINANET = osp.join(ROOT, 'configs', 'vtfpn', 'retinanet_r50_vtfpn_1x_coco.py')


CLASSIFIER = osp.join(ROOT, 'configs', 'vt_resnet', 'vt-resnet18_8xb32_in1k.py')


def _tool(name):
    """tools/NAME.py as a module (tools/ is a namespace package under the repository root)."""
    return importlib.import_module(f'tools.{name}')


@pytest.fixture(scope='module')
def train():
    return _tool('train')


@pytest.fixture(scope='module')
def test_tool():
    return _tool('test')


@pytest.fixture(scope='module')
def export():
    return _tool('deployment.export')


def _config_with(tmp_path, text, base=DEMO, name='cfg.py'):
    path = tmp_path / name
    path.write_text(f'_base_ = [{base!r}]\n{text}')
    return str(path)


@pytest.fixture
def no_local_rank(monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)


def test_train_defaults(train, no_local_rank):
    args = train.parse_args([DEMO])
    assert (args.work_dir, args.resume, args.check_data, args.amp, args.auto_scale_lr,
            args.cfg_options, args.launcher, args.local_rank) == (
                None, None, False, False, False, None, 'none', 0)
    assert os.environ['LOCAL_RANK'] == '0'


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_local_rank_from_the_environment_wins_over_the_flag(tool, monkeypatch):
    """torchrun sets LOCAL_RANK; the deprecated --local-rank fills it only when it is unset."""
    module = _tool(tool)
    argv = [DEMO] + (['ckpt.pth'] if tool == 'test' else [])
    monkeypatch.setenv('LOCAL_RANK', '3')
    module.parse_args(argv + ['--local-rank', '1'])
    assert os.environ['LOCAL_RANK'] == '3'
    monkeypatch.delenv('LOCAL_RANK')
    module.parse_args(argv + ['--local_rank', '1'])
    assert os.environ['LOCAL_RANK'] == '1'


def test_work_dir_precedence_both_ways(train, tmp_path):
    """--work-dir over the config's work_dir over ./work_dirs/<config name>; --cfg-options
    work_dir=... over the config's, and --work-dir over both."""
    plain = train.build_config(train.parse_args([DEMO]))
    assert plain.work_dir == osp.join('./work_dirs', 'vtfpn_r50_lip-demo-128x128')
    own = _config_with(tmp_path, "work_dir = 'from_config'\n")
    assert train.build_config(train.parse_args([own])).work_dir == 'from_config'
    assert train.build_config(train.parse_args([own, '--work-dir', 'from_flag'])).work_dir == \
        'from_flag'
    assert train.build_config(train.parse_args(
        [own, '--cfg-options', 'work_dir=from_options'])).work_dir == 'from_options'
    assert train.build_config(train.parse_args(
        [own, '--cfg-options', 'work_dir=from_options', '--work-dir', 'from_flag'])).work_dir \
        == 'from_flag'


def test_cfg_options_override_the_config(train):
    cfg = train.build_config(train.parse_args(
        [DEMO, '--cfg-options', 'train_cfg.max_iters=7', 'model.neck.num_tokens=12']))
    assert cfg.train_cfg.max_iters == 7 and cfg.model.neck.num_tokens == 12
    plain = train.build_config(train.parse_args([DEMO]))
    assert plain.train_cfg.max_iters == 700 and plain.model.neck.num_tokens == 8


def test_resume_precedence_over_load_from_both_ways(train, tmp_path):
    """--resume FILE replaces the config's load_from; bare --resume clears it (the newest
    checkpoint of the work dir is found at run time); without --resume the config's load_from
    and resume stay."""
    ckpt = tmp_path / 'given.pth'
    ckpt.write_bytes(b'x')
    own = _config_with(tmp_path, "load_from = 'config.pth'\n")
    cfg = train.build_config(train.parse_args([own]))
    assert cfg.load_from == 'config.pth' and not cfg.get('resume', False)
    cfg = train.build_config(train.parse_args([own, '--resume', str(ckpt)]))
    assert cfg.load_from == str(ckpt) and cfg.resume is True
    cfg = train.build_config(train.parse_args([own, '--resume']))
    assert cfg.load_from is None and cfg.resume is True
    with pytest.raises(SystemExit, match=r'--resume .*nope\.pth: no such checkpoint file'):
        train.build_config(train.parse_args([own, '--resume', str(tmp_path / 'nope.pth')]))


def test_amp_and_auto_scale_lr(train, tmp_path, monkeypatch):
    import torch
    with pytest.raises(SystemExit, match='--amp needs a GPU'):
        train.build_config(train.parse_args([DEMO, '--amp']))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = train.build_config(train.parse_args([DEMO, '--amp']))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == \
        'dynamic'
    own = _config_with(tmp_path, "optim_wrapper = dict(loss_scale=512.0)\n")
    assert train.build_config(train.parse_args([own, '--amp'])).optim_wrapper.loss_scale == 512.0
    monkeypatch.undo()
    with pytest.raises(SystemExit, match=r'^--auto-scale-lr needs auto_scale_lr\.base_batch_size '
                       r'in the config$'):
        train.build_config(train.parse_args([DEMO, '--auto-scale-lr']))
    scaled = _config_with(tmp_path, 'auto_scale_lr = dict(enable=False, base_batch_size=16)\n',
                          name='scaled.py')
    assert train.build_config(train.parse_args([scaled])).auto_scale_lr.enable is False
    assert train.build_config(train.parse_args([scaled, '--auto-scale-lr'])).auto_scale_lr.enable
    half = _config_with(tmp_path, 'auto_scale_lr = dict(enable=False)\n', name='half.py')
    with pytest.raises(SystemExit, match='base_batch_size'):
        train.build_config(train.parse_args([half, '--auto-scale-lr']))


@pytest.fixture
def checkpoint_file(tmp_path):
    path = tmp_path / 'model.pth'
    path.write_bytes(b'x')
    return str(path)


def test_test_defaults_and_the_checkpoint_is_never_load_from(test_tool, checkpoint_file,
                                                             tmp_path, no_local_rank):
    args = test_tool.parse_args([DEMO, checkpoint_file])
    assert (args.work_dir, args.out, args.show, args.show_dir, args.wait_time, args.tta,
            args.launcher, args.local_rank) == (None, None, False, None, 2, False, 'none', 0)
    own = _config_with(tmp_path, "load_from = 'config.pth'\n")
    cfg = test_tool.build_config(test_tool.parse_args([own, checkpoint_file]))
    assert cfg.load_from is None  # loaded strictly by the tool, not by the Runner
    with pytest.raises(SystemExit, match=r"checkpoint '.*missing\.pth': no such file"):
        test_tool.build_config(test_tool.parse_args([own, str(tmp_path / 'missing.pth')]))


def test_test_work_dir_precedence(test_tool, checkpoint_file, tmp_path):
    own = _config_with(tmp_path, "work_dir = 'from_config'\n")
    assert test_tool.build_config(test_tool.parse_args([own, checkpoint_file])).work_dir == \
        'from_config'
    assert test_tool.build_config(test_tool.parse_args(
        [own, checkpoint_file, '--work-dir', 'w'])).work_dir == 'w'
    assert test_tool.build_config(test_tool.parse_args([DEMO, checkpoint_file])).work_dir == \
        osp.join('./work_dirs', 'vtfpn_r50_lip-demo-128x128')


def test_show_dir_per_toolbox(test_tool, checkpoint_file):
    seg = test_tool.build_config(test_tool.parse_args(
        [DEMO, checkpoint_file, '--work-dir', 'w', '--show-dir', 'vis']))
    vis = seg.default_hooks.visualization
    assert vis.draw is True and vis.interval == 1 and vis.show is False
    assert seg.visualizer.save_dir == osp.join('w', 'vis')
    det = test_tool.build_config(test_tool.parse_args(
        [RETINANET, checkpoint_file, '--show-dir', 'vis']))
    assert det.default_hooks.visualization.draw is True
    assert det.default_hooks.visualization.test_out_dir == 'vis'
    assert det.default_hooks.visualization.interval == 1
    cls = test_tool.build_config(test_tool.parse_args(
        [CLASSIFIER, checkpoint_file, '--show-dir', 'vis']))
    assert cls.default_hooks.visualization.enable is True
    assert cls.default_hooks.visualization.out_dir == 'vis'
    shown = test_tool.build_config(test_tool.parse_args(
        [DEMO, checkpoint_file, '--show', '--wait-time', '0.5']))
    assert shown.default_hooks.visualization.show is True
    assert shown.default_hooks.visualization.wait_time == 0.5
    assert 'save_dir' not in shown.visualizer or shown.visualizer.save_dir != 'vis'
    plain = test_tool.build_config(test_tool.parse_args([DEMO, checkpoint_file]))
    assert plain.default_hooks.visualization.get('draw', False) is False


def test_out_per_toolbox(test_tool, checkpoint_file):
    seg = test_tool.build_config(test_tool.parse_args([DEMO, checkpoint_file, '--out', 'preds']))
    evaluator = seg.test_evaluator
    assert evaluator['output_dir'] == 'preds' and evaluator['keep_results'] is True
    for suffix in ('.pkl', '.pickle'):
        det = test_tool.build_config(test_tool.parse_args(
            [RETINANET, checkpoint_file, '--out', 'r' + suffix]))
        assert [e['type'] for e in det.test_evaluator] == ['CocoMetric', 'DumpDetResults']
        assert det.test_evaluator[-1]['out_file_path'] == 'r' + suffix
    cls = test_tool.build_config(test_tool.parse_args(
        [CLASSIFIER, checkpoint_file, '--out', 'r.pkl']))
    assert cls.test_evaluator[-1]['type'] == 'DumpResults'
    with pytest.raises(SystemExit, match=r'--out r\.json: mmdet / mmpretrain results are a '
                       'pickle file; use a .pkl path'):
        test_tool.build_config(test_tool.parse_args([RETINANET, checkpoint_file, '--out',
                                                     'r.json']))


def test_tta_needs_its_config_and_wraps_the_model(test_tool, checkpoint_file, tmp_path):
    cfg = test_tool.build_config(test_tool.parse_args([DEMO, checkpoint_file, '--tta']))
    assert cfg.model.type == 'FlipSwapSegTTAModel'
    assert cfg.model.module.type == 'EncoderDecoder'
    assert cfg.test_dataloader.dataset.pipeline == cfg.tta_pipeline
    plain = test_tool.build_config(test_tool.parse_args([DEMO, checkpoint_file]))
    assert plain.model.type == 'EncoderDecoder'
    with pytest.raises(SystemExit, match='--tta needs tta_model and tta_pipeline'):
        test_tool.build_config(test_tool.parse_args([CLASSIFIER, checkpoint_file, '--tta']))


def test_export_defaults_are_pinned(export):
    """What docs/en/user_guides/deployment.md promises for a bare export call."""
    args = export.parse_args([DEMO, '--out-dir', 'o'])
    assert (args.checkpoint, args.backend, args.shape, args.output, args.labels_upsample,
            args.int8, args.precision, args.calib_images, args.threads, args.repeats,
            args.verbose) == (None, ['onnxruntime'], None, None, 1, False, 'fp32', 32, 1,
                              10, False)
    # without --output: detectors the detections graph takes end in detections; the rest
    # (segmentors, classifiers, a two-stage detector with another RoI head) in logits
    from types import SimpleNamespace

    import torch
    one_stage = torch.nn.Module()
    one_stage.bbox_head = SimpleNamespace(bbox_coder=1, prior_generator=1, test_cfg={})
    two_stage = torch.nn.Module()
    two_stage.rpn_head = one_stage.bbox_head
    two_stage.roi_head, two_stage.with_rpn = SimpleNamespace(), True  # not a StandardRoIHead
    assert [export.default_output(m, t) for m, t in [
        (torch.nn.Identity(), 'mmseg'), (torch.nn.Identity(), 'mmpretrain'),
        (one_stage, 'mmdet'), (two_stage, 'mmdet')]] == [
            'logits', 'logits', 'detections', 'logits']
    with pytest.raises(SystemExit):
        export.parse_args([DEMO])  # --out-dir is required


def test_export_int8_and_bf16_exclude_each_other(export, capsys):
    for order in (['--int8', '--precision', 'bf16'], ['--precision', 'bf16', '--int8']):
        with pytest.raises(SystemExit, match=r'^\[export\] --int8 and --precision bf16 exclude '
                           r'each other: --int8 is --precision int8$'):
            export.check_args(export.parse_args([DEMO, '--out-dir', 'o'] + order))
    # --int8 is --precision int8, alone or with fp32 / int8 named; the rest keep their value
    for argv, precision in ((['--int8'], 'int8'), (['--int8', '--precision', 'fp32'], 'int8'),
                            (['--precision', 'int8', '--int8'], 'int8'),
                            (['--precision', 'int8'], 'int8'), (['--precision', 'bf16'], 'bf16'),
                            ([], 'fp32')):
        args = export.parse_args([DEMO, '--out-dir', 'o'] + argv)
        export.check_args(args)
        assert args.precision == precision, argv
    with pytest.raises(SystemExit):
        export.parse_args([DEMO, '--out-dir', 'o', '--precision', 'fp16'])
    assert export.parse_args([DEMO, '--out-dir', 'o']).config == DEMO


def _help(module, argv_prefix, capsys):
    with pytest.raises(SystemExit) as info:
        module.parse_args(argv_prefix + ['--help'])
    assert info.value.code == 0
    return ' '.join(capsys.readouterr().out.split())


TRAIN_HELP = [
    'Train a model with a vt-mm config', 'config train config file path',
    '--work-dir WORK_DIR the dir to save logs and models',
    '--resume [RESUME] resume from this checkpoint, or (no value) from the latest one in the '
    'work dir',
    '--check-data check every sample of the train and val splits before training (default: 16 '
    'evenly spaced samples each); tools/analysis_tools/check_data.py lists them without training',
    '--amp mixed precision (needs a GPU)',
    '--auto-scale-lr scale the lr by the actual batch size',
    '--cfg-options CFG_OPTIONS [CFG_OPTIONS ...] override config entries, e.g. '
    'train_cfg.max_iters=100 model.pretrained=None',
    '--launcher {none,pytorch,slurm,mpi} job launcher',
    '--local_rank LOCAL_RANK, --local-rank LOCAL_RANK']


TEST_HELP = [
    'Test a checkpoint with a vt-mm config', 'config test config file path',
    'checkpoint checkpoint file', '--work-dir WORK_DIR the dir to save logs and results',
    '--out OUT where to keep the raw predictions', '--show show predictions in a window',
    '--show-dir SHOW_DIR write prediction overlays to this dir',
    '--wait-time WAIT_TIME --show interval (s)', '--tta test-time augmentation (tta_model)',
    '--cfg-options CFG_OPTIONS [CFG_OPTIONS ...] override config entries',
    '--launcher {none,pytorch,slurm,mpi} job launcher',
    '--local_rank LOCAL_RANK, --local-rank LOCAL_RANK']


EXPORT_HELP = [
    '--checkpoint CHECKPOINT weights to load strictly',
    '--backend {mnn,ncnn,onnxruntime,openvino,tflite} [{mnn,ncnn,onnxruntime,openvino,tflite} '
    '...]',
    "--shape H W the graph's static input size (default: the config's test size)",
    '--output {logits,labels,detections} what the graph ends in: logits (default for '
    'segmentors and classifiers), labels (segmentors: the argmax in the graph), detections '
    "(default for detectors: boxes, scores, labels after NMS, Mask R-CNN's masks); logits of a "
    'detector are its backbone + neck features',
    "--labels-upsample K --output labels: bilinear upsampling of the logits by K before the "
    "argmax (1: none; the head's stride: mmseg's prediction)",
    '--precision {fp32,int8,bf16} int8: static quantization on calibration images; bf16: the '
    'fp32 graph run in bf16 (OpenVINO on CPUs with bf16); other than fp32 the differences are '
    'reported, not checked against 1e-4',
    '--int8 the same as --precision int8',
    "--calib-images CALIB_IMAGES calibration images from the config's training split (int8)",
    '--threads THREADS', '--repeats REPEATS timed runs per backend', '--out-dir OUT_DIR',
    "--verbose also print mmengine's model-initialisation log"]


@pytest.mark.parametrize('tool,argv,texts', [('train', [], TRAIN_HELP),
                                             ('test', [], TEST_HELP),
                                             ('deployment.export', [], EXPORT_HELP)])
def test_help_names_every_option(tool, argv, texts, capsys):
    shown = _help(_tool(tool), argv, capsys)
    for text in texts:  # whole words: a text inside a longer one does not count
        assert re.search(rf'(^|\s){re.escape(text)}(\s|$)', shown), text


def test_export_help_is_its_docstring_as_written(export, capsys):
    with pytest.raises(SystemExit):
        export.parse_args(['--help'])
    raw = capsys.readouterr().out
    assert raw.startswith('usage: ') and 'config\n' in raw.split('\n\n')[0] + '\n'
    # RawTextHelpFormatter: the docstring's own lines, indentation kept
    assert '    python tools/deployment/export.py CONFIG [--checkpoint CKPT]\n' \
        '        --backend onnxruntime openvino mnn ncnn tflite [--shape H W]\n' in raw
    assert export.__doc__.splitlines()[0] in raw


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_launchers_ranks_and_options_are_parsed(tool, capsys, no_local_rank):
    module = _tool(tool)
    argv = [DEMO] + (['ckpt.pth'] if tool == 'test' else [])
    for launcher in ('none', 'pytorch', 'slurm', 'mpi'):
        assert module.parse_args(argv + ['--launcher', launcher]).launcher == launcher
    with pytest.raises(SystemExit):
        module.parse_args(argv + ['--launcher', 'local'])
    assert 'invalid choice' in capsys.readouterr().err
    assert module.parse_args(argv + ['--local-rank', '2']).local_rank == 2
    options = module.parse_args(argv + ['--cfg-options', 'a=1', 'b.c=x,y']).cfg_options
    assert options == {'a': 1, 'b.c': ['x', 'y']}


def test_resume_value_is_the_path_given(train):
    assert train.parse_args([DEMO, '--resume', '12.pth']).resume == '12.pth'
    assert train.parse_args([DEMO, '--resume']).resume == 'auto'
    assert train.parse_args([DEMO, '--check-data']).check_data is True


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_launcher_and_options_reach_the_config(tool, checkpoint_file):
    module = _tool(tool)
    argv = [DEMO] + ([checkpoint_file] if tool == 'test' else [])
    cfg = module.build_config(module.parse_args(argv + ['--launcher', 'pytorch', '--cfg-options',
                                                        'test_cfg.mode=slide']))
    assert cfg.launcher == 'pytorch' and cfg.test_cfg.mode == 'slide'
    assert module.build_config(module.parse_args(argv)).launcher == 'none'


def test_tta_needs_both_its_model_and_its_pipeline(test_tool, checkpoint_file, tmp_path):
    for missing in ('tta_model', 'tta_pipeline'):
        own = _config_with(tmp_path, f'{missing} = None\n', name=f'no_{missing}.py')
        with pytest.raises(SystemExit, match=r'^--tta needs tta_model and tta_pipeline in the '
                           r'config$'):
            test_tool.build_config(test_tool.parse_args([own, checkpoint_file, '--tta']))


def test_show_needs_a_visualization_hook(test_tool, checkpoint_file, tmp_path):
    own = _config_with(tmp_path, 'default_hooks = dict(visualization=None)\n')
    from mmengine.config import Config
    cfg = Config.fromfile(own)
    del cfg.default_hooks['visualization']
    cfg.dump(str(tmp_path / 'dumped.py'))
    with pytest.raises(SystemExit, match=r'^--show/--show-dir need default_hooks\.visualization '
                       r'in the config$'):
        test_tool.build_config(test_tool.parse_args([str(tmp_path / 'dumped.py'),
                                                     checkpoint_file, '--show']))


def test_out_with_a_list_of_evaluators(test_tool, checkpoint_file, tmp_path):
    seg = _config_with(tmp_path, "test_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),"
                       " dict(type='IoUMetric', iou_metrics=['mDice'])]\n", name='seg.py')
    cfg = test_tool.build_config(test_tool.parse_args([seg, checkpoint_file, '--out', 'p']))
    assert [(e['output_dir'], e['keep_results']) for e in cfg.test_evaluator] == [('p', True)] * 2
    det = _config_with(tmp_path, "test_evaluator = [dict(type='CocoMetric'), "
                       "dict(type='VOCMetric')]\n", base=RETINANET, name='det.py')
    cfg = test_tool.build_config(test_tool.parse_args([det, checkpoint_file, '--out', 'r.pkl']))
    assert [e['type'] for e in cfg.test_evaluator] == ['CocoMetric', 'VOCMetric',
                                                        'DumpDetResults']


@pytest.mark.parametrize('argv,message', [
    (['--shape', '15', '64'], r'^\[export\] --shape 15 64: each side must be in \[16, 8192\] '
     r"pixels \(the graph is static at this size\); leave --shape out for the config's test "
     r'size$'),
    (['--shape', '64', '8193'], r'--shape 64 8193: each side must be in \[16, 8192\] pixels'),
    (['--shape', '0', '0'], r'--shape 0 0: each side'),
    (['--shape', '-64', '64'], r'--shape -64 64: each side'),
    (['--threads', '0'], r'--threads 0: must be at least 1'),
    (['--repeats', '0'], r'--repeats 0: must be at least 1'),
    (['--calib-images', '0'], r'--calib-images 0: must be at least 1'),
    (['--labels-upsample', '0'], r'--labels-upsample 0: must be at least 1')])
def test_export_refuses_values_no_export_can_use(export, argv, message):
    with pytest.raises(SystemExit, match=message):
        export.check_args(export.parse_args([DEMO, '--out-dir', 'o'] + argv))


def test_export_accepts_the_boundaries_and_refuses_a_file_as_out_dir(export, tmp_path):
    assert (export.MIN_SIDE, export.MAX_SIDE) == (16, 8192)
    for shape in (['16', '16'], ['8192', '8192']):
        export.check_args(export.parse_args([DEMO, '--out-dir', str(tmp_path / 'new'),
                                             '--shape'] + shape))
    export.check_args(export.parse_args([DEMO, '--out-dir', str(tmp_path)]))
    a_file = tmp_path / 'file.txt'
    a_file.write_text('x')
    with pytest.raises(SystemExit, match=rf'^\[export\] --out-dir {a_file} is a file; give a '
                       r'folder \(it is created if missing\)$'):
        export.check_args(export.parse_args([DEMO, '--out-dir', str(a_file)]))


@pytest.mark.parametrize('content,message', [
    ('nan', 'holds NaN/Inf in 1 tensors (backbone.conv1.weight)'),
    ('text', 'is not a checkpoint torch can read'), ('empty', 'is empty (0 bytes)')])
def test_export_refuses_bad_checkpoints_before_writing_anything(export, tmp_path, content,
                                                                message):
    import torch
    path = tmp_path / 'c.pth'
    if content == 'nan':
        torch.save({'state_dict': {'backbone.conv1.weight': torch.tensor([float('nan')])}}, path)
    elif content == 'text':
        path.write_text('hello')
    else:
        path.write_bytes(b'')
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as info:
        export.main([DEMO, '--checkpoint', str(path), '--out-dir', str(out)])
    assert str(info.value).startswith('[export] ERROR: ') and message in str(info.value)
    assert not out.exists()


def test_export_refuses_a_shape_whose_activations_do_not_fit(export, monkeypatch, tmp_path):
    """8192x8192 through the demo VT-FPN needs tens of GiB: refused from small probes, before
    anything that size is allocated, with the estimate and what is free."""
    from vt_mm import analysis
    monkeypatch.setattr(analysis, 'available_memory_bytes', lambda: 8 * 2**30)
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as info:
        export.main([DEMO, '--shape', '8192', '8192', '--out-dir', str(out)])
    message = str(info.value)
    assert message.startswith('[export] --shape 8192 8192 needs about ')
    assert 'GiB for the network\'s activations (estimated from small probes), and this machine ' \
        'has 8.0 GiB free; export a smaller --shape' in message
    assert float(message.split('about ')[1].split(' GiB')[0]) > 8
    assert not out.exists()
