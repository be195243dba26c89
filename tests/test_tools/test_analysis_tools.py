"""The benchmark tool, the model-zoo table it writes, the metafiles, and the attention renderer."""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from vt_mm import analysis
from vt_mm.utils import timing


def _load_script(name):
    """A script of tools/analysis_tools as a module (the scripts are not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        name, osp.join(ROOT, 'tools', 'analysis_tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _import_analysis_module(name):
    """A module of tools/analysis_tools imported by name, as a config's ``custom_imports``
    imports it (once, cached in sys.modules: a second load through ``_load_script`` would
    register its models twice)."""
    import importlib
    tools = osp.join(ROOT, 'tools', 'analysis_tools')
    if tools not in sys.path:
        sys.path.append(tools)
    return importlib.import_module(name)


benchmark = _load_script('benchmark')


def test_fused_attention_is_counted_like_the_explicit_one():
    """mmengine skips scaled_dot_product_attention; the tool counts it, matching the matmuls of
    the explicit softmax(q k^T) v path."""
    from vt_mm.models.backbones import PyramidTNT
    model = PyramidTNT('ti')
    model.eval()
    x = torch.randn(1, 3, 192, 192)
    fused, skipped = analysis.count_flops(model, x)
    assert 'aten::scaled_dot_product_attention' not in skipped
    model.set_fused_attn(False)
    explicit, _ = analysis.count_flops(model, x)
    assert fused == explicit
    assert abs(fused / 0.59e9 - 1) < 0.02  # the paper's 0.59 GMACs


def test_alternate_timing_lets_other_runtimes_thread_pools_settle(monkeypatch):
    """Between different callables on the CPU the timer pauses (outside the timed span), so a
    runtime's spin-waiting workers do not share cores with the next runtime's threads."""
    events = []
    monkeypatch.setattr(timing.time, 'sleep', lambda s: events.append(('sleep', s)))
    fns = [lambda: events.append('a'), lambda: events.append('b')]
    analysis.time_alternately(fns, runs=2, warmup=0, device='cpu', settle_s=0.03)
    assert events == [('sleep', 0.03), 'a', ('sleep', 0.03), 'b'] * 2
    events.clear()
    analysis.time_alternately(fns[:1], runs=2, warmup=0, device='cpu', settle_s=0.03)
    assert events == ['a', 'a']  # one callable: nothing to settle, no pause


def test_measure_two_configs_side_by_side(capsys):
    rows = benchmark.main([
        'configs/seaformer/seaformer-tiny_8xb128_in1k.py',
        'configs/vt_resnet/vt-resnet18_8xb32_in1k.py', '--shape', '64', '64', '--runs', '2',
        '--warmup', '1'
    ])
    out = capsys.readouterr().out
    assert [r['params'] for r in rows] == [1781096, sum(
        p.numel() for p in analysis.build_model('configs/vt_resnet/vt-resnet18_8xb32_in1k.py')[0]
        .parameters())]
    assert all(r['latency_ms'] > 0 and r['latency_min_ms'] <= r['latency_ms'] <= r['latency_max_ms']
               for r in rows)
    assert 'A / B: params' in out and 'latency' in out
    assert rows[0]['shape'] == [64, 64]


@pytest.mark.runtime
def test_onnxruntime_column(capsys):
    """--onnxruntime times the exported graph alternately with eager: the whole network for a
    classifier, backbone + neck (with its own eager time) for a detector."""
    pytest.importorskip('onnxruntime')
    rows = benchmark.main(['configs/seaformer/seaformer-tiny_8xb128_in1k.py', '--shape', '64', '64',
                           '--runs', '2', '--warmup', '1', '--onnxruntime'])
    (row, ) = rows
    assert row['exported'] == 'whole network' and row['onnxruntime_ms'] > 0
    assert row['eager_exported_ms'] == row['latency_ms']
    assert 'eager / onnxruntime' in capsys.readouterr().out
    (det, ) = benchmark.measure(['configs/vtfpn/retinanet_r50_vtfpn_1x_coco.py'], (64, 96), runs=1,
                                warmup=0, onnxruntime=True)
    assert det['exported'] == 'backbone + neck' and det['onnxruntime_ms'] > 0
    assert det['eager_exported_ms'] != det['latency_ms']


def test_default_input_sizes_follow_the_toolbox():
    _, cfg, toolbox = analysis.build_model(
        'configs/seaformer/seaformer-tiny_8xb4-160k_ade20k-512x512.py')
    assert analysis.default_shape(cfg, toolbox) == (512, 512)
    _, cfg, toolbox = analysis.build_model('configs/pyramid_tnt/pyramid-tnt-s_8xb128_in1k.py')
    assert analysis.default_shape(cfg, toolbox) == (256, 256)


def test_metafiles_list_every_config():
    models = benchmark.load_model_index()
    listed = {m['Config'] for m in models}
    for path in listed:
        assert osp.isfile(osp.join(ROOT, path)), path
    configs = {osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                                                        recursive=True)}
    configs = {c for c in configs if '_base_' not in c and not c.endswith('_demo.py')}
    assert configs - listed == set()
    for m in models:
        assert m['collection']['Paper']['URL'].startswith('https://arxiv.org/')
        assert 'x' in str(m['Metadata']['Resolution'])


@pytest.mark.runtime
def test_model_zoo_table_from_the_tool(tmp_path):
    out = tmp_path / 'zoo.md'
    text = benchmark.write_model_zoo(str(out), only='seaformer-tiny_8xb4-160k|pyramid-tnt-ti|'
                                     'vt-resnet50_8xb32', runs=0)
    assert '| CPU ms | onnxruntime ms, speed-up |' in text
    table, deploy = text.split('\n## Deployment latency', 1)
    rows = [line for line in table.splitlines() if line.startswith('| ') and 'model |' not in line]
    assert len(rows) == 3
    # the deployment latency table of docs/deployment.md, with the paper's ARM figures
    assert '| seaformer-tiny_8xb4-160k_ade20k-512x512 | logits | 512x512 | 1 |' in deploy
    assert 'paper ARM ms' in deploy and '<!--' not in deploy
    # updating some rows keeps the others and does not take latency rows for model rows
    again = benchmark.write_model_zoo(str(out), only='pyramid-tnt-ti', runs=0)
    assert again.count('\n## Deployment latency') == 1
    assert again.split('\n## Deployment latency')[0].count('| seaformer-tiny_8xb4-160k') == 1
    sea = next(r for r in rows if r.startswith('| seaformer-tiny'))
    assert '| equal |' in sea and 'mIoU 36.5' in sea and '0.565' in sea
    vt = next(r for r in rows if r.startswith('| vt-resnet50'))
    assert 'vs paper (no official model)' in vt
    assert out.read_text() == text


@pytest.mark.slow
def test_attention_renderer_writes_a_grid(tmp_path):
    from PIL import Image
    img = tmp_path / 'person.jpg'
    Image.fromarray((torch.rand(96, 96, 3) * 255).byte().numpy()).save(img)
    out = tmp_path / 'attn.png'
    proc = subprocess.run([sys.executable, 'tools/analysis_tools/vis_token_attention.py',
                           'configs/vt_resnet/vt-resnet18_8xb32_in1k.py', str(img), '--out',
                           str(out)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '16 tokens' in proc.stdout
    grid = Image.open(out)
    assert grid.size[0] > 600  # input + 16 panels


def test_attention_maps_are_distributions_over_pixels():
    vis = _load_script('vis_token_attention')
    model, _, _ = vis.load_model('configs/vtfpn_lip.py')
    x = torch.randn(1, 3, 96, 128)
    for level, size in ((0, (24, 32)), (3, (3, 4))):
        attn = vis.attention_maps(model, x, level, -1)
        assert attn.shape == (8, *size)
        torch.testing.assert_close(attn.sum(dim=(1, 2)), torch.ones(8))


def test_token_statistics_table(tmp_path):
    """--stats: one row per VT-FPN level with the four statistics, averaged over the images."""
    from PIL import Image
    vis = _load_script('vis_token_attention')
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f'img{i}.png'))
        Image.fromarray((torch.rand(64, 96, 3) * 255).byte().numpy()).save(paths[-1])
    stats = vis.main(['configs/vtfpn_lip.py', *paths, '--stats'])
    assert len(stats) == 4
    for row in stats:
        assert 0 < row['attention_entropy'] <= 1 + 1e-6 and row['attention_peak'] >= 1 - 1e-4
        assert -1 <= row['token_similarity'] <= 1 + 1e-6 and row['projection_ratio'] > 0
        assert 0 < row['projector_entropy'] <= 1 + 1e-6
    table = vis.format_statistics(stats)
    assert table.count('\n') == 5 and '| attention entropy |' in table
    assert '| projector entropy |' in table


@pytest.mark.slow
def test_synthetic_benchmark_trains_and_reports(tmp_path):
    sb = _load_script('synthetic_benchmark')
    results = sb.main(['--tasks', 'seg', 'det', '--iters', '2', '--det-epochs', '1',
                       '--det-images', '2', '--models', '^VT-FPN$|R-18 VT-FPN',
                       '--out', str(tmp_path)])
    assert [r['model'] for r in results] == ['Semantic FPN R-50 VT-FPN', 'RetinaNet R-18 VT-FPN']
    assert all(len(r['train']) >= 1 and r['train'][0]['loss'] > 0 for r in results)
    text = (tmp_path / 'results.md').read_text()
    assert 'Synthetic data' in text
    assert '| seg (LIP-layout) | Semantic FPN R-50 VT-FPN | 2 |' in text
    assert (tmp_path / 'loss_curves.png').stat().st_size > 1000


def test_parity_control_neck_is_fpn_without_output_convs():
    """The control of the training-parity benchmark: FPN's laterals and top-down sum only, i.e.
    what VT-FPN adds its tokens to; extra levels stay as mmdet builds them."""
    from mmdet.models.necks import FPN

    from vt_mm.models.necks import VTFPN
    control_mod = _import_analysis_module('parity_necks')
    torch.manual_seed(0)
    in_ch = [8, 16, 32, 64]
    feats = [torch.randn(2, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate(in_ch)]
    control = control_mod.FPNWithoutOutputConvs(in_ch, 16, 5, add_extra_convs='on_input').eval()
    fpn = FPN(in_ch, 16, 5, add_extra_convs='on_input').eval()
    vt = VTFPN(in_ch, 16, 5, add_extra_convs='on_input').eval()
    fpn.load_state_dict(control.state_dict(), strict=False)
    vt.load_state_dict(control.state_dict(), strict=False)
    with torch.no_grad():
        outs, laterals = control(feats), vt.lateral_features(feats)
        for out, lat in zip(outs[:4], laterals):
            torch.testing.assert_close(out, lat)
        torch.testing.assert_close(outs[4], fpn(feats)[4])  # P6 conv on the input, as FPN
    assert sum(p.numel() for p in control.parameters()) < sum(
        p.numel() for p in fpn.parameters())


def test_parity_report_judges_with_the_control_column(tmp_path):
    tp = _load_script('training_parity')

    def fake(vals):
        return [dict(metric=v, steps=[10, 20], losses=[1.0, 0.5], s_per_iter=0.1) for v in vals]

    results = {'lip-sgd': {'FPN': fake([40.0, 39.0, 41.0]), 'VT-FPN': fake([39.5, 39.4, 39.6]),
                           'FPN-no-3x3': fake([36.0, 37.0, 38.0])}}
    text = tp.report(results, [0, 1, 2], str(tmp_path))
    row = next(line for line in text.splitlines() if line.startswith('| lip-sgd'))
    # FPN 40 +- 1, VT-FPN 39.5: within one FPN std -> met; the control is a column of its own
    assert '| 40.00 +- 1.00 | 39.50 +- 0.10 | 37.00 +- 1.00 | -0.500 | yes' in row
    results['lip-sgd']['VT-FPN'] = fake([38.0, 38.5, 38.9])
    assert '| NO (allowed -1.000)' in tp.report(results, [0, 1, 2], str(tmp_path))
    results['lip-sgd']['FPN'] = [None] * 3  # not run: no verdict, the other columns stay
    text = tp.report(results, [0, 1, 2], str(tmp_path))
    assert 'goal met' not in text and '| 38.47 +- 0.45 | 37.00 +- 1.00 |' in text
    # a trade-off variant is a column of its own, in NECKS order, beside the judged pair
    results['lip-sgd']['FPN'] = fake([40.0, 39.0, 41.0])
    results['lip-sgd']['VT-FPN-dwsep'] = fake([39.0, 40.0, 41.0])
    text = tp.report(results, [0, 1, 2], str(tmp_path))
    assert '| FPN | VT-FPN | FPN-no-3x3 | VT-FPN-dwsep | VT-FPN - FPN |' in text
    assert '| 37.00 +- 1.00 | 40.00 +- 1.00 | -1.533 |' in text


def test_parity_report_leaves_out_a_neck_whose_run_failed_in_any_row(tmp_path):
    """A failed run leaves None in its row: the neck drops out of the whole table (it was
    judged on the first row only, and a failure in the second crashed the report)."""
    tp = _load_script('training_parity')

    def fake(vals):
        return [dict(metric=v, steps=[10, 20], losses=[1.0, 0.5], s_per_iter=0.1) for v in vals]

    results = {row: {'FPN': fake([0.3, 0.4, 0.5]), 'VT-FPN-dwsep': fake([0.2, 0.3, 0.4])}
               for row in ('retinanet', 'mask-rcnn')}
    results['mask-rcnn']['VT-FPN-dwsep'][1] = None
    text = tp.report(results, [0, 1, 2], str(tmp_path))
    assert 'VT-FPN-dwsep' not in text and '| retinanet | box AP | 0.400 +- 0.100 |' in text


def test_every_parity_row_builds_every_neck(tmp_path):
    """Each neck of NECKS builds in each row's model: the 3x3-on-the-coarse-levels variant
    once indexed the used levels, which RetinaNet (start_level=1) rejected only when its run
    came up, ten minutes into a benchmark; check_config_builds is that preflight."""
    tp = _load_script('training_parity')
    _import_analysis_module('parity_necks')  # the control's custom_imports, as in the runs
    roots = dict(lip=str(tmp_path / 'lip'), cue=str(tmp_path / 'cue'), coco=str(tmp_path / 'coco'))
    for row in tp.ROWS:
        for neck in tp.NECKS:
            path = tmp_path / f'{row}_{neck}.py'
            path.write_text(tp.config_text(row, neck, roots, 0.1))
            tp.check_config_builds(str(path), row, neck)
    path = tmp_path / 'bad.py'
    path.write_text(tp.config_text('retinanet', 'VT-FPN', roots, 0.1) +
                    "model['neck'].update(dict(output_convs='conv3x3', "
                    'output_conv_levels=(0, 3)))\n')
    with pytest.raises(SystemExit, match=r"row 'retinanet' with neck 'VT-FPN' does not build "
                       r'.*output_conv_levels=\(0, 3\) must be distinct backbone'):
        tp.check_config_builds(str(path), 'retinanet', 'VT-FPN')


def test_parity_detection_configs_load_the_generated_shapes(tmp_path):
    """training_parity's RetinaNet and Mask R-CNN rows: coco_data_config's data load, with masks
    (and the segm metric) only for Mask R-CNN, into the R-18 / 128-channel models."""
    from mmdet.registry import DATASETS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from vt_mm.datasets.demo_shapes import make_demo_coco
    tp = _load_script('training_parity')
    root = str(tmp_path / 'coco')
    make_demo_coco(root, 'train', num_images=2, size=(160, 128), seed=0)
    make_demo_coco(root, 'val', num_images=2, size=(160, 128), seed=1)
    init_default_scope('mmdet')
    for row, with_mask in (('retinanet', False), ('mask-rcnn', True)):
        path = tmp_path / f'{row}.py'
        path.write_text(tp.config_text(row, 'VT-FPN', dict(coco=root), 0.1))
        cfg = Config.fromfile(str(path))
        assert cfg.model.neck.type == 'VTFPN' and cfg.model.neck.out_channels == 128
        assert cfg.val_evaluator.metric == (['bbox', 'segm'] if with_mask else 'bbox')
        sample = DATASETS.build(cfg.train_dataloader.dataset)[0]['data_samples']
        assert len(sample.gt_instances) >= 1
        assert ('masks' in sample.gt_instances) == with_mask
        assert tuple(sample.img_shape) == (128, 160)  # Resize to (160, 128), aspect kept


def test_benchmark_prints_its_table_not_the_initialisation_log(tmp_path):
    """benchmark.py printed ~1000 lines of mmengine's init_weights log around a two-row table;
    the log now needs --verbose."""
    import os
    import subprocess
    import sys
    root = ROOT
    cfg = os.path.join(root, 'configs', 'vt_resnet', 'vt-resnet18_8xb32_in1k.py')
    outputs = {}
    for flag in ([], ['--verbose']):
        proc = subprocess.run([sys.executable, 'tools/analysis_tools/benchmark.py', cfg,
                               '--no-latency', '--shape', '64', '64'] + flag, cwd=root,
                              capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS='1'))
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[bool(flag)] = proc.stdout + proc.stderr
    quiet, verbose = outputs[False], outputs[True]
    assert 'vt-resnet18_8xb32_in1k' in quiet and '|' in quiet
    assert 'init_weights' not in quiet and len(quiet.splitlines()) < 40, len(quiet.splitlines())
    assert 'init_weights' in verbose and len(verbose.splitlines()) > 100


def test_check_gpu_script_runs_its_comparisons_on_the_cpu():
    """tools/check_gpu.py (run on a GPU machine for docs/benchmarks.md) with ``--device cpu``:
    the same build, forward + backward and comparison code, fp32 against itself (0) and CPU
    bf16 autocast against fp32 (bf16's ~1e-2, outputs and parameter gradients); without a GPU
    the default device says so."""
    script = osp.join(ROOT, 'tools', 'check_gpu.py')
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
