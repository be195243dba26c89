"""The benchmark tool, the model-zoo table it writes, the metafiles, and the attention renderer."""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from helpers import MOVED_CONFIGS, ROOT, load_script

from vt_mm import analysis
from vt_mm.utils import timing

benchmark = load_script('tools/analysis_tools/benchmark.py')


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
    configs = {c for c in configs if '_base_' not in c and c not in MOVED_CONFIGS}
    assert configs - listed == set()
    for m in models:
        if m['In Collection'] != 'Demo':
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
    # the deployment latency table of benchmarks/reports/deployment.md, with the paper's ARM figures
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
    vis = load_script('tools/analysis_tools/vis_token_attention.py')
    model, _, _ = vis.load_model('configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py')
    x = torch.randn(1, 3, 96, 128)
    for level, size in ((0, (24, 32)), (3, (3, 4))):
        attn = vis.attention_maps(model, x, level, -1)
        assert attn.shape == (8, *size)
        torch.testing.assert_close(attn.sum(dim=(1, 2)), torch.ones(8))


def test_token_statistics_table(tmp_path):
    """--stats: one row per VT-FPN level with the four statistics, averaged over the images."""
    from PIL import Image
    vis = load_script('tools/analysis_tools/vis_token_attention.py')
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f'img{i}.png'))
        Image.fromarray((torch.rand(64, 96, 3) * 255).byte().numpy()).save(paths[-1])
    stats = vis.main(['configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py', *paths, '--stats'])
    assert len(stats) == 4
    for row in stats:
        assert 0 < row['attention_entropy'] <= 1 + 1e-6 and row['attention_peak'] >= 1 - 1e-4
        assert -1 <= row['token_similarity'] <= 1 + 1e-6 and row['projection_ratio'] > 0
        assert 0 < row['projector_entropy'] <= 1 + 1e-6
    table = vis.format_statistics(stats)
    assert table.count('\n') == 5 and '| attention entropy |' in table
    assert '| projector entropy |' in table


@pytest.mark.slow  # a tool or a user's program in a process of its own
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


def test_family_vt_resnet_table_has_the_papers_counts_beside_ours():
    """benchmark.py --family vt-resnet: ResNet-18 and VT-ResNet-18 classifiers side by side,
    our params and FLOPs next to the paper's (in brackets), the last stage's FLOPs of each."""
    text = benchmark.vt_resnet_family(depths=(18, ), runs=1, warmup=0)
    (row, ) = [line for line in text.splitlines() if line.startswith('| 18 |')]
    cells = [c.strip() for c in row.strip('|').split('|')]
    assert cells[1] == '11.69 (11.7)' and cells[2] == '11.58 (11.7, T8)', row
    assert cells[3].startswith('1.81') and cells[3].endswith('(1.814)'), row
    assert cells[4] == '1.533 (1.569, T8)', row
    resnet_last, vt_last = map(float, cells[5].split(' / '))
    assert cells[6] == f'{resnet_last / vt_last:.1f}x' and resnet_last / vt_last > 2, row


def test_family_pyramid_tnt_compares_the_fused_and_official_attention_paths():
    text = benchmark.pyramid_tnt_family(archs=('ti', ), runs=1, warmup=0,
                                        detection_size=(64, 96))
    rows = [line for line in text.splitlines() if line.startswith('| TI |')]
    assert len(rows) == 2, text
    native, detection = ([c.strip() for c in r.strip('|').split('|')] for r in rows)
    assert native[1:6] == ['192x192', '10.58', '10.58', '0.59', '0.59'], native
    assert detection[1] == '64x96' and detection[3] == detection[5] == '-', detection
    assert float(native[-1]) < 1e-4 and float(detection[-1]) < 1e-4  # same outputs


def test_family_seaformer_times_eager_and_deploy_mode():
    text = benchmark.seaformer_family(archs=('tiny', ), shape=(64, 64), runs=1, warmup=0,
                                      baselines=False)
    rows = {r.split('|')[1].strip(): [c.strip() for c in r.strip('|').split('|')]
            for r in text.splitlines() if r.startswith('| SeaFormer')}
    assert set(rows) == {'SeaFormer-T', 'SeaFormer-T deploy'}, text
    assert rows['SeaFormer-T'][1] == '1.67'  # the ADE20K segmentor: 1,667,318 parameters
    assert rows['SeaFormer-T'][3] == '' and rows['SeaFormer-T deploy'][3].endswith('x')


@pytest.mark.parametrize('argv, message', [
    (['--family', 'vt-resnet', 'configs/x.py'], 'give no config'),
    (['--family', 'pyramid-tnt', '--shape', '64', '64'], "runs at the paper's sizes"),
    (['--family', 'resnet'], "invalid choice: 'resnet'"),
])
def test_family_refuses_what_it_cannot_honour(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        benchmark.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err
