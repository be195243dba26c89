"""Every family on every deployment backend (onnxruntime, OpenVINO, MNN, ncnn, TFLite), at small
sizes: converted offline, run in its own runtime on the same input as PyTorch, within 1e-4
(issue "Deploy everywhere"). `make test` installs the runtimes (tools/setup_env.sh --deploy), so
CI skips none of these; elsewhere a missing runtime skips with the reason."""
import importlib
import os
import os.path as osp
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

from vt_mm.analysis import build_model  # noqa: E402
from vt_mm.deploy import OfflineViolation, SegmentationLabels, offline  # noqa: E402
from vt_mm.deploy.backends import BACKENDS  # noqa: E402
from vt_mm.deploy.pipeline import TOLERANCE, deploy  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ALL = list(BACKENDS)
MISSING = {name: b.missing() for name, b in BACKENDS.items() if b.missing()}

SMALL_SEMANTIC_VTFPN = """
_base_ = [{base!r}]
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(pretrained=None, backbone=dict(depth=18, norm_cfg=norm_cfg),
             neck=dict(in_channels=[64, 128, 256, 512], out_channels=32, token_channels=64),
             decode_head=dict(in_channels=[32, 32, 32, 32], channels=32, norm_cfg=norm_cfg))
"""


def _require(backends):
    missing = {b: MISSING[b] for b in backends if b in MISSING}
    if missing:
        pytest.skip(f'runtimes not installed: {missing} (bash tools/setup_env.sh --deploy)')


def _trained_like_bn(model):
    """Non-trivial BN statistics, so that a backend that drops or misplaces BN cannot pass."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 0.4 + 0.8)
    return model


def _config(name, tmp_path):
    if name == 'vtfpn_small':
        path = tmp_path / 'vtfpn_small.py'
        path.write_text(SMALL_SEMANTIC_VTFPN.format(base=osp.join(ROOT, 'configs',
                                                                  'vtfpn_lip.py')))
        return str(path)
    return osp.join(ROOT, 'configs', name)


FAMILIES = [
    # (config, static input size): each family the issue names, at a small size
    ('seaformer/seaformer-tiny_8xb4-160k_ade20k-512x512.py', (64, 96)),
    ('seaformer/seaformer-large_8xb128_in1k.py', (64, 64)),
    ('vtfpn_small', (64, 64)),  # Semantic FPN + VT-FPN (ResNet-18, narrow)
    ('vt_resnet/vt-resnet18_8xb32_in1k.py', (64, 64)),
    ('pyramid_tnt/pyramid-tnt-ti_8xb128_in1k.py', (64, 64)),
    ('pyramid_tnt/retinanet_pyramid-tnt-s_fpn_1x_coco.py', (64, 96)),  # backbone + FPN
    ('vtfpn/retinanet_r50_vtfpn_1x_coco.py', (64, 96)),  # ResNet-50 + VT-FPN (P3-P7)
]


@pytest.mark.parametrize('config,shape', FAMILIES, ids=[f[0].split('/')[-1] for f in FAMILIES])
def test_family_on_every_backend(config, shape, tmp_path):
    _require(ALL)
    torch.manual_seed(0)
    model, _, toolbox = build_model(_config(config, tmp_path))
    _trained_like_bn(model).eval()
    report = deploy(model, ALL, shape, str(tmp_path / 'out'), 'model', toolbox=toolbox,
                    repeats=1)
    failures = [r.line() for r in report['results'] if not r.ok]
    assert not failures, failures
    for r in report['results']:
        assert r.max_abs_output > 1e-2, r  # not a comparison between zeros
        assert r.max_abs_diff <= TOLERANCE * max(1.0, r.max_abs_output), r
        assert all(osp.isfile(f) for f in r.files), r.files
    # the static graph is folded: no Identity chains, no constant resizes of embeddings left
    assert 'Identity' not in report['op_counts'], report['op_counts']


def test_fp32_weights_in_every_backend(tmp_path):
    """Guards against a converter's fp16 default (pnnx stores fp16 unless fp16=0; OpenVINO's
    save_model compresses to fp16 by default): each backend's weights take at least 75% of the
    fp32 ONNX graph's initializer bytes (fp16 would take about half; runtimes fold or share a
    few constants, OpenVINO keeps 86%)."""
    import onnx
    _require(ALL)
    model, _, toolbox = build_model(osp.join(ROOT, 'configs', FAMILIES[0][0]))
    report = deploy(model.eval(), ALL, (64, 64), str(tmp_path), 'sea', toolbox=toolbox,
                    repeats=1)
    graph = onnx.load(report['onnx']).graph
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in graph.initializer
               if len(t.dims) > 1)
    fp32_bytes = sum(4 * int(np.prod(t.dims)) for t in graph.initializer)
    assert fp32_bytes > 4e6  # SeaFormer-T's ~1.7M parameters
    for r in report['results']:
        assert r.ok, r.line()
        weights = r.files[-1] if r.backend in ('openvino', 'ncnn') else r.files[0]
        assert osp.getsize(weights) >= 0.75 * fp32_bytes, (r.backend, osp.getsize(weights))


def test_labels_output_on_every_backend(tmp_path):
    """--output labels: argmax at the logits' resolution + nearest upsample to the input, int32,
    in every backend (ncnn through the argmax-by-reduction graph), the same labels as PyTorch."""
    _require(ALL)
    torch.manual_seed(0)
    model, _, toolbox = build_model(osp.join(ROOT, 'configs', FAMILIES[0][0]))
    _trained_like_bn(model).eval()
    report = deploy(model, ALL, (64, 96), str(tmp_path), 'sea', toolbox=toolbox,
                    output='labels', repeats=1)
    assert report['outputs'] == ['labels']
    assert 'ArgMax' in report['op_counts']
    for r in report['results']:
        assert r.error is None, r.line()
        assert r.agreement >= 0.999, r.line()  # near-ties of random logits may flip a pixel
    ncnn = next(r for r in report['results'] if r.backend == 'ncnn')
    assert ncnn.files[0].endswith('.labels.argmax-by-reduction.ncnn.param')


def test_argmax_by_reduction_equals_argmax():
    """The ArgMax-free labels (for ncnn) are argmax's, ties going to the first class."""
    logits = torch.randn(2, 7, 5, 6) * 3
    logits[0, 2:5, 1, 1] = 9.0  # a tie: the first of 2, 3, 4 wins
    logits[1, :, 0, 0] = -1e-6  # all equal and tiny
    net = torch.nn.Identity()
    plain = SegmentationLabels(net)(logits)
    reduced = SegmentationLabels(net, argmax_by_reduction=True, integer=False)(logits)
    assert plain.dtype == torch.int32 and reduced.dtype == torch.float32
    assert torch.equal(plain, reduced.to(torch.int32))
    assert plain[0, 0, 1, 1] == 2 and plain[1, 0, 0, 0] == 0
    expected = logits.argmax(1, keepdim=True).to(torch.int32)
    assert torch.equal(plain, expected)


def test_labels_are_for_segmentors_only():
    from vt_mm.deploy import exportable
    model, _, toolbox = build_model(osp.join(ROOT, 'configs', FAMILIES[3][0]))
    with pytest.raises(ValueError, match="output='labels' is for segmentors"):
        exportable(model, toolbox, 'labels')


def test_offline_guard_blocks_network_installs_and_programs():
    """What MNN's Python converter does when a package is missing (pip install, then a usage
    log over the network) raises inside the guard that every conversion runs in."""
    with offline():
        with pytest.raises(OfflineViolation, match='network'):
            socket.create_connection(('203.0.113.1', 443), timeout=1)
        with pytest.raises(OfflineViolation, match='os.system'):
            os.system('pip install -U aliyun-log-python-sdk')
        with pytest.raises(OfflineViolation, match='blocked'):
            subprocess.run([sys.executable, '-m', 'pip', 'install', 'x'])
        with pytest.raises(OfflineViolation, match='blocked'):
            os.popen('true')
    # outside the guard nothing is patched
    assert subprocess.run(['true']).returncode == 0


def test_offline_guard_allows_named_programs_and_loopback():
    true = subprocess.run(['which', 'true'], capture_output=True, text=True).stdout.strip()
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    try:
        with offline(allowed_programs=[true]):
            assert subprocess.run([true]).returncode == 0
            socket.create_connection(server.getsockname(), timeout=1).close()
    finally:
        server.close()


def test_mnn_tools_import_is_blocked():
    """Importing MNN.tools runs 'pip install' (MNN 3.x, MNN/tools/utils/log.py); vt-mm calls the
    converter in the _tools extension instead, and the guard refuses the import."""
    pytest.importorskip('MNN')
    sys.modules.pop('MNN.tools', None)
    with offline(), pytest.raises(OfflineViolation, match='MNN.tools'):
        importlib.import_module('MNN.tools')


def test_cli_prints_one_line_per_backend(tmp_path):
    _require(['onnxruntime', 'openvino'])
    cfg = _config('vtfpn_small', tmp_path)
    proc = subprocess.run([
        sys.executable, 'tools/deployment/export.py', cfg, '--backend', 'onnxruntime',
        'openvino', '--shape', '64', '64', '--repeats', '1', '--out-dir', str(tmp_path / 'out')
    ], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if 'max_abs_diff' in line]
    assert [line.split(':')[0] for line in lines] == ['onnxruntime', 'openvino'], proc.stdout
    assert all('latency' in line and ' ms ' in line for line in lines)
    assert osp.isfile(tmp_path / 'out' / 'vtfpn_small.xml')
    assert osp.isfile(tmp_path / 'out' / 'vtfpn_small.bin')
    assert np.isfinite(float(lines[0].split('max_abs_diff ')[1].split()[0]))


def test_cli_fails_for_a_backend_that_is_not_installed(tmp_path, monkeypatch):
    from vt_mm.deploy import pipeline
    from vt_mm.deploy.backends.base import Backend
    monkeypatch.setattr(BACKENDS['openvino'], 'packages', ('no_such_runtime_pkg', ))
    model, _, toolbox = build_model(_config('vtfpn_small', tmp_path))
    report = pipeline.deploy(model, ['onnxruntime', 'openvino'], (64, 64), str(tmp_path), 'm',
                             toolbox=toolbox, repeats=1)
    bad = report['results'][1]
    assert not bad.ok and 'no_such_runtime_pkg' in bad.error and '--deploy' in bad.error
    assert report['results'][0].ok
    assert issubclass(BACKENDS['openvino'], Backend)
