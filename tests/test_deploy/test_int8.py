"""INT8 deployment (onnxruntime QDQ, OpenVINO from the same QDQ graph, MNN's quantizer, TFLite
fully integer) and OpenVINO's bf16, the calibration data and the accuracy tool that scores
deployed graphs against mmseg's prediction (issue "Deploy everywhere", items 3 and 5). Small
SeaFormer-T at 64x64 on generated LIP-layout data; the trained-model numbers are benchmarks
(benchmarks/reports/deployment.md)."""
import copy
import logging
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT, SEAFORMER_DEMO
from helpers.export import trained_like_bn

from vt_mm.analysis import build_model
from vt_mm.deploy import accuracy, exportable, onnx_op_counts
from vt_mm.deploy.backends import BACKENDS
from vt_mm.deploy.calibration import calibration_images
from vt_mm.deploy.pipeline import deploy

# every test here converts models with the deployment runtimes (not in make test-fast)
pytestmark = pytest.mark.runtime

pytest.importorskip('onnxruntime')



DEMO = SEAFORMER_DEMO


SIZE = 64


def _require(backends):
    missing = {b: BACKENDS[b].missing() for b in backends if BACKENDS[b].missing()}
    if missing:
        pytest.skip(f'runtimes not installed: {missing} (bash dev/setup_env.sh --deploy)')


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """(config path, data root): the SeaFormer-T demo config on 6 train / 2 val images, tested
    at 64x64."""
    from vt_mm.datasets import make_demo_lip
    tmp = tmp_path_factory.mktemp('int8')
    root = str(tmp / 'lip')
    make_demo_lip(root, num_train=6, num_val=2, size=48, seed=1)
    path = tmp / 'seaformer_demo_64.py'
    path.write_text(f"""_base_ = [{DEMO!r}]
data_root = {root!r}
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({SIZE}, {SIZE}), keep_ratio=False),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
""")
    return str(path), root


@pytest.fixture(scope='module')
def model_and_cfg(demo):
    torch.manual_seed(0)
    model, cfg, toolbox = build_model(demo[0])
    assert toolbox == 'mmseg'
    return trained_like_bn(model).eval(), cfg


def test_calibration_images_are_training_images_through_the_test_pipeline(demo, model_and_cfg):
    """Calibration never uses the validation images an INT8 model is scored on, and sees what
    the graph sees: the test pipeline (no random crops or flips), normalised, at its size."""
    model, cfg = model_and_cfg
    images = calibration_images(cfg, model, (SIZE, SIZE), 3)
    assert len(images) == 3 and all(i.shape == (1, 3, SIZE, SIZE) for i in images)
    assert all(i.dtype == np.float32 for i in images)
    through_test_pipeline = copy.deepcopy(cfg)
    through_test_pipeline.train_dataloader.dataset.pipeline = cfg.test_dataloader.dataset.pipeline
    train = accuracy.val_samples(through_test_pipeline, model, split='train_dataloader')
    val = accuracy.val_samples(cfg, model)
    # spread over the split (indices 0, 2.5 -> 2, 5), exactly, without augmentation
    for image, idx in zip(images, (0, 2, 5)):
        np.testing.assert_array_equal(image, train[idx].inputs)
    for image in images:
        assert all(not np.array_equal(image, v.inputs) for v in val)
    assert calibration_images(cfg, model, (32, 40), 1)[0].shape == (1, 3, 32, 40)
    with pytest.raises(ValueError, match='7 calibration images.*has 6'):
        calibration_images(cfg, model, (SIZE, SIZE), 7)


def test_calibration_without_its_data_says_how_to_make_it(model_and_cfg, tmp_path):
    """A fresh clone has no data/LIP_demo: INT8 calibration (export.py --int8,
    deploy_benchmark.py) names the missing data_root and the command that writes the demo
    data, instead of mmseg's `Failed to load ann_file`."""
    model, cfg = model_and_cfg
    cfg = copy.deepcopy(cfg)
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'absent')
    with pytest.raises(FileNotFoundError, match=r"train_dataloader: data_root .*absent.* does "
                       r"not exist.*make_demo_lip\.py --out data/LIP_demo"):
        calibration_images(cfg, model, (SIZE, SIZE), 1)


def test_mmseg_postprocessing_of_logits_is_mmseg_predict(model_and_cfg):
    """The accuracy tool's post-processing of a backend's 1/8 logits reproduces mmseg's
    EncoderDecoder.predict exactly when given PyTorch's logits (so only the runtime differs)."""
    model, cfg = model_and_cfg
    samples = accuracy.val_samples(cfg, model)
    net = exportable(model, 'mmseg', 'logits').eval()
    for sample in samples:
        assert sample.mmseg_pred.shape == sample.gt.shape == (48, 48)  # the image's size
        with torch.no_grad():
            logits = net(torch.from_numpy(sample.inputs)).numpy()
        assert logits.shape[-2:] == (SIZE // 8, SIZE // 8)
        np.testing.assert_array_equal(accuracy.mmseg_labels(model, logits, sample),
                                      sample.mmseg_pred)
        # a different prediction is told apart
        shifted = np.roll(logits, 1, axis=1)
        assert not np.array_equal(accuracy.mmseg_labels(model, shifted, sample),
                                  sample.mmseg_pred)


def test_score_counts_miou_and_agreement_as_mmseg_does():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    sample = accuracy.ValSample(None, None, gt, mmseg_pred=gt.copy())
    assert accuracy.score(lambda s: s.gt, [sample], 3).miou == pytest.approx(100)
    pred = np.array([[0, 0, 0, 1], [0, 0, 1, 2]])  # one 1 -> 0; the ignored pixel as 2
    scored = accuracy.score(lambda s: pred, [sample], 3)
    # IoU(0) = 4/5, IoU(1) = 2/3, class 2 absent from the (non-ignored) labels: nan, not counted
    assert scored.miou == pytest.approx(100 * (4 / 5 + 2 / 3) / 2)
    assert scored.agreement == pytest.approx(100 * 6 / 8)
    labels = np.arange(4, dtype=np.int32).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(accuracy.label_map_to(labels, (4, 4)),
                                  np.repeat(np.repeat(labels[0, 0], 2, 0), 2, 1))


def test_labels_from_upsampled_logits(model_and_cfg, tmp_path):
    """logits_upsample=K: bilinear upsampling of the logits by K (the head's align_corners)
    before the argmax; at the head's stride the labels are mmseg's prediction at the input
    size. onnxruntime gives PyTorch's labels."""
    model, cfg = model_and_cfg
    sample = accuracy.val_samples(cfg, model, max_images=1)[0]
    x = torch.from_numpy(sample.inputs)
    metas = [s.metainfo for s in sample.data_samples]
    with torch.no_grad():
        logits = exportable(model, 'mmseg', 'logits')(x)
        full = exportable(model, 'mmseg', 'labels', logits_upsample=8)(x)
        mmseg = model.decode_head.predict_by_feat(logits, metas).argmax(1, keepdim=True)
        twice = exportable(model, 'mmseg', 'labels', logits_upsample=2)(x)
        up2 = F.interpolate(logits, scale_factor=2, mode='bilinear', align_corners=False)
        plain = exportable(model, 'mmseg', 'labels')(x)
    assert full.shape == (1, 1, SIZE, SIZE) and full.dtype == torch.int32
    torch.testing.assert_close(full, mmseg.to(torch.int32), rtol=0, atol=0)
    expected2 = F.interpolate(up2.argmax(1, keepdim=True).float(), size=(SIZE, SIZE))
    torch.testing.assert_close(twice, expected2.to(torch.int32), rtol=0, atol=0)
    assert not torch.equal(plain, full)  # the factor changes the labels
    with pytest.raises(ValueError, match='logits_upsample must be an integer >= 1'):
        exportable(model, 'mmseg', 'labels', logits_upsample=0)
    report = deploy(model, ['onnxruntime'], (SIZE, SIZE), str(tmp_path), 'sea',
                    toolbox='mmseg', output='labels', repeats=1, labels_upsample=2)
    (result, ) = report.results
    assert result.files[0].endswith('sea.labels.up2.onnx')
    assert result.agreement == 1.0, result.line()
    assert 'Resize' in report.op_counts


def test_int8_in_onnxruntime_openvino_mnn_and_tflite_is_quantized_and_tracks_fp32(
        demo, model_and_cfg, tmp_path, caplog):
    """Static INT8, calibrated on the config's training images: onnxruntime's graph carries
    QDQ pairs, OpenVINO compiles that graph with int8 convolutions, TFLite's is fully integer
    (int8 input), MNN's quantizer stores int8 weights; all follow the fp32 logits closely but
    not exactly (a backend that ignored the calibration and stayed fp32 would be exact). The
    quantized graph goes to litert-torch in eval mode (it warned 'converted in training mode'
    for every INT8 model: the exported module's flag stayed True)."""
    _require(['onnxruntime', 'openvino', 'mnn', 'tflite'])
    model, cfg = model_and_cfg
    calibration = calibration_images(cfg, model, (SIZE, SIZE), 4)
    with caplog.at_level(logging.WARNING):
        report = deploy(model, ['onnxruntime', 'openvino', 'mnn', 'tflite'], (SIZE, SIZE),
                        str(tmp_path), 'sea', toolbox='mmseg', precision='int8',
                        calibration=calibration, repeats=1, keep_going=False)
    assert 'training mode' not in caplog.text
    ort, ov, mnn, tfl = report.results
    assert ort.files[0].endswith('.int8.onnx') and tfl.files[0].endswith('.int8.tflite')
    assert mnn.files == [str(tmp_path / 'sea.int8.mnn')]
    # int8 weights: about a quarter of the fp32 model's bytes (measured 0.28 on SeaFormer-T)
    assert os.path.getsize(mnn.files[0]) < 0.5 * os.path.getsize(tmp_path / 'sea.mnn')
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.png') or
                osp.isdir(tmp_path / f)]  # the calibration images are cleaned up
    assert ov.files[0].endswith('.int8.xml') and ov.files[1].endswith('.int8.bin')
    ops = onnx_op_counts(ort.files[0])
    assert ops.get('QuantizeLinear', 0) > 20 and ops.get('DequantizeLinear', 0) > 20, ops
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=tfl.files[0])
    assert interpreter.get_input_details()[0]['dtype'] == np.int8
    # OpenVINO executes the convolutions in int8 (not the QDQ pairs dequantized back to fp32)
    assert _openvino_int8_convolutions(ov.files[0]) > 10
    # on a calibration-like image (the random one of deploy() is out of distribution)
    x = calibration[1]
    with torch.no_grad():
        expected = report.jobs['onnxruntime'].net(torch.from_numpy(x)).numpy()
    for result in (ort, ov, mnn, tfl):
        assert result.precision == 'int8' and result.ok
        assert 0.9 < result.calibration_cosine <= 1 + 1e-9, result.line()
        run = BACKENDS[result.backend]().load(result.files, report.jobs[result.backend])
        got = run(x)[0].reshape(expected.shape)
        err = np.abs(got - expected).max() / np.abs(expected).max()
        cosine = float((got * expected).sum() /
                       (np.linalg.norm(got) * np.linalg.norm(expected)))
        # random weights at 64x64 quantize worse than a trained model (measured: max error
        # 23-29% of the peak, cosine 0.976-0.979); benchmarks/reports/deployment.md has the
        # trained models' mIoU
        assert 1e-5 < err < 0.5 and cosine > 0.95, (result.backend, err, cosine)


def test_int8_graph_that_departs_from_fp32_on_calibration_data_is_flagged():
    """An INT8 graph is reported, not judged against 1e-4; its cosine to fp32 on a calibration
    image (MNN's VT-FPN graph: 0.95, 4 mIoU; the others 0.998+) below 0.99 gives a warning
    that export.py prints; fp32 results and close INT8 graphs give none."""
    from vt_mm.deploy.pipeline import DeployResult
    bad = DeployResult('mnn', files=['x.int8.mnn'], max_abs_diff=11.5, max_abs_output=8.6,
                       latency_ms=1.0, precision='int8', calibration_cosine=0.9496)
    assert bad.ok and 'cosine 0.9496 < 0.99' in bad.warning() and 'deploy_accuracy' in bad.warning()
    assert 'cosine to fp32 on a calibration image 0.9496' in bad.line()
    good = DeployResult('onnxruntime', files=['x.int8.onnx'], max_abs_diff=1.4,
                        max_abs_output=8.6, latency_ms=1.0, precision='int8',
                        calibration_cosine=0.9998)
    fp32 = DeployResult('onnxruntime', files=['x.onnx'], max_abs_diff=1e-6, max_abs_output=8.6,
                        latency_ms=1.0)
    assert good.warning() is None and fp32.warning() is None


def test_mnn_quantizer_crash_is_a_reported_failure(model_and_cfg, tmp_path, monkeypatch):
    """MNN's quantizer aborts its process on input it rejects (a JSON among the calibration
    images; KL on VT-FPN segfaults; ADMM ends in munmap_chunk): it runs in a child process, so
    a crash is one backend's reported failure and the other backends still convert."""
    _require(['onnxruntime', 'mnn'])
    from vt_mm.deploy.backends import mnn
    monkeypatch.setattr(mnn, 'QUANTIZE', 'import ctypes; ctypes.string_at(0)')  # a segfault
    model, cfg = model_and_cfg
    calibration = calibration_images(cfg, model, (SIZE, SIZE), 2)
    report = deploy(model, ['mnn', 'onnxruntime'], (SIZE, SIZE), str(tmp_path), 'sea',
                    toolbox='mmseg', precision='int8', calibration=calibration, repeats=1)
    crashed, ort = report.results
    assert 'MNN could not quantize' in crashed.error and 'exit status -11' in crashed.error
    assert ort.ok and ort.files[0].endswith('.int8.onnx')


def _openvino_int8_convolutions(xml: str) -> int:
    """How many convolutions OpenVINO's CPU plugin runs with int8 / uint8 inputs (the
    compiled model's execution graph)."""
    import openvino as ov
    compiled = ov.Core().compile_model(xml, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    count = 0
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()  # e.g. layerType 'Convolution', runtimePrecision 'u8'
        if (info['layerType'].astype(str) == 'Convolution'
                and info['runtimePrecision'].astype(str).lower() in ('i8', 'u8')):
            count += 1
    return count


def test_int8_on_a_backend_without_it_names_the_ones_with_it(model_and_cfg, tmp_path):
    model, cfg = model_and_cfg
    report = deploy(model, ['ncnn'], (SIZE, SIZE), str(tmp_path), 'sea', toolbox='mmseg',
                    precision='int8', calibration=[np.zeros((1, 3, SIZE, SIZE), np.float32)],
                    repeats=1)
    error = report.results[0].error
    assert error == ("ValueError: ncnn runs only fp32 in vt-mm; --precision int8 is on "
                     "['mnn', 'onnxruntime', 'openvino', 'tflite']"), error


def _cpu_has_bf16() -> bool:
    from vt_mm.deploy.backends.openvino import cpu_capabilities
    return 'BF16' in cpu_capabilities()


def test_openvino_bf16_computes_in_bf16_and_tracks_fp32(model_and_cfg, tmp_path):
    """--precision bf16 (OpenVINO's opt-in, where the CPU has bf16): the same fp32 files
    compiled for bf16 arithmetic. Its logits differ from PyTorch far beyond fp32 rounding (a
    backend that ignored the option would match to 1e-6) but follow them closely; the result
    is reported (reduced precision), not judged against 1e-4; the IR still holds fp32
    weights."""
    _require(['openvino'])
    if not _cpu_has_bf16():
        pytest.skip('this CPU has no bf16 (OpenVINO OPTIMIZATION_CAPABILITIES)')
    model, _ = model_and_cfg
    runs = {p: deploy(model, ['openvino'], (SIZE, SIZE), str(tmp_path / p), 'sea',
                      toolbox='mmseg', repeats=1, keep_going=False, precision=p)
            for p in ('fp32', 'bf16')}
    fp32, bf16 = (runs[p].results[0] for p in ('fp32', 'bf16'))
    assert fp32.precision == 'fp32' and fp32.max_abs_diff < 1e-5 * fp32.max_abs_output
    assert bf16.precision == 'bf16' and bf16.ok
    assert bf16.max_abs_diff > 1e-3 * bf16.max_abs_output, bf16.line()
    job = runs['bf16'].jobs['openvino']
    got = BACKENDS['openvino']().load(bf16.files, job)(job.example)[0].ravel()
    expected = job.expected[0].ravel()
    cosine = float(got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected)))
    assert cosine > 0.99, cosine
    import openvino as ov
    weights = [op for op in ov.Core().read_model(bf16.files[0]).get_ordered_ops()
               if op.get_type_name() == 'Constant' and op.get_output_size() and
               op.get_output_element_type(0).is_real()]
    assert weights and all(op.get_output_element_type(0) == ov.Type.f32 for op in weights)


def test_bf16_where_it_cannot_run_says_where_it_can(model_and_cfg, tmp_path, monkeypatch):
    """--precision bf16 on a backend without it names the ones with it; on a CPU without bf16
    OpenVINO's plugin would silently stay f32 (or take f16): vt-mm raises instead; calibration
    inputs come only with INT8."""
    model, _ = model_and_cfg
    report = deploy(model, ['onnxruntime'], (SIZE, SIZE), str(tmp_path), 'sea',
                    toolbox='mmseg', repeats=1, precision='bf16')
    error = report.results[0].error
    assert 'onnxruntime runs only fp32' in error and "['openvino']" in error, error
    from vt_mm.deploy.backends import openvino
    monkeypatch.setattr(openvino, 'cpu_capabilities', lambda: ['FP32', 'INT8'])
    with pytest.raises(ValueError, match='this CPU has no bf16 .*FP32, INT8'):
        openvino.OpenVINOBackend.check_precision('bf16')
    openvino.OpenVINOBackend.check_precision('fp32')
    with pytest.raises(ValueError, match="come with precision='int8' and only with it"):
        deploy(model, ['openvino'], (SIZE, SIZE), str(tmp_path), 'sea', toolbox='mmseg',
               calibration=[np.zeros((1, 3, SIZE, SIZE), np.float32)], precision='bf16')


def test_accuracy_tool_prints_a_row_per_runtime_and_graph(demo, model_and_cfg, tmp_path):
    """tools/deployment/deploy_accuracy.py on a checkpoint: PyTorch's logits and labels,
    each backend's labels graph, fp32, INT8 and (OpenVINO, on a CPU with bf16) bf16 logits
    (numbers are benchmarks, not asserted beyond their range; PyTorch's logits row is mmseg's
    own prediction: 100% agreement)."""
    _require(['onnxruntime', 'openvino'])
    bf16 = _cpu_has_bf16()
    model, _ = model_and_cfg
    ckpt = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    proc = subprocess.run([
        sys.executable, 'tools/deployment/deploy_accuracy.py', demo[0], ckpt, '--backend',
        'onnxruntime', '--int8-backend', 'onnxruntime', '--calib-images', '2', '--runs', '1',
        '--labels-upsample', '1', '2', '--bf16-backend', 'openvino',
        '--out-dir', str(tmp_path / 'acc')
    ], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.split('|')[1:-1]]
        if line.startswith('| ') and cells[2] in ('fp32', 'INT8', 'bf16'):
            rows[tuple(cells[:3])] = cells[3:]
    up = 'labels, logits x2 bilinear'
    expected = {('PyTorch', 'logits', 'fp32'), ('PyTorch', 'labels', 'fp32'),
                ('onnxruntime', 'labels', 'fp32'), ('PyTorch', up, 'fp32'),
                ('onnxruntime', up, 'fp32'), ('onnxruntime', 'logits', 'fp32'),
                ('onnxruntime', 'logits', 'INT8')}
    if bf16:
        expected |= {('openvino', 'logits', 'fp32'), ('openvino', 'logits', 'bf16')}
    else:
        assert 'no bf16 rows for openvino: this CPU has no bf16' in proc.stderr
    assert set(rows) == expected, proc.stdout
    assert float(rows[('PyTorch', 'logits', 'fp32')][1]) == 100.0
    assert float(rows[('onnxruntime', 'logits', 'fp32')][1]) == 100.0
    for miou, agreement, ms in rows.values():
        assert 0 <= float(miou) <= 100 and 0 < float(agreement) <= 100 and float(ms) > 0
    assert '2 validation images at 64x64' in proc.stdout


def test_latency_benchmark_of_a_classifier_with_int8_prints_the_table_only(demo, tmp_path):
    """deploy_benchmark.py --variants int8 on classifiers builds the (mmseg) calibration
    config between mmpretrain models: mmengine's logger wrote its scope-switch warning
    between the table's rows on stdout; it goes to stderr. The int8 and bf16 rows have cells
    only for the backends that have them (ratios to their own fp32 graph)."""
    _require(['onnxruntime', 'openvino'])
    bf16 = _cpu_has_bf16()
    classifier = osp.join(ROOT, 'configs', 'seaformer', 'seaformer-tiny_8xb128_in1k.py')
    proc = subprocess.run([
        sys.executable, 'benchmarks/deploy_benchmark.py', classifier, classifier,
        '--backend',
        'onnxruntime', 'openvino', '--variants', 'logits', 'int8', 'bf16', '--calib-config',
        demo[0],
        '--calib-images', '2', '--threads', '1', '--runs', '1', '--warmup', '0', '--shape',
        str(SIZE), str(SIZE), '--out-dir', str(tmp_path / 'bench')
    ], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines[0].startswith('Cells:') and all(line.startswith('|') for line in lines[1:]), \
        proc.stdout
    rows = [[c.strip() for c in line.split('|')[2:-1]] for line in lines[3:]]
    graphs = ['logits', 'int8'] + (['bf16'] if bf16 else [])
    assert [r[0] for r in rows] == graphs * 2, proc.stdout
    for graph, _, _, eager, ort_ms, ov_ms, _ in rows:
        assert bool(eager) == (graph == 'logits') and bool(ort_ms) == (graph != 'bf16')
        assert ov_ms.endswith('x)'), proc.stdout


def test_converter_progress_stays_off_stdout(capfd):
    """quiet_stdout (around litert-torch's and MNN's converters): Python prints (litert's
    progress bars) and C-level writes to fd 1 (MNN's notices) vanish; stdout works after."""
    from vt_mm.deploy.backends.base import quiet_stdout
    with quiet_stdout():
        print('[START] LiteRT-Torch Convert')
        os.write(1, b'Resize has empty input\n')
    print('result line')
    assert capfd.readouterr().out == 'result line\n'
    with pytest.raises(RuntimeError, match='conversion failed'):
        with quiet_stdout():
            raise RuntimeError('conversion failed')
    print('still here')
    assert capfd.readouterr().out == 'still here\n'


def test_onnxruntime_int8_uses_7_bit_weights_only_on_x86_without_vnni(tmp_path):
    """Guards the u8s8 saturation fix: an AVX2 CPU (no VNNI) gets reduce_range (on such a
    machine full 8-bit weights put SeaFormer-T's INT8 logits 80% of the peak off); a VNNI CPU,
    an ARM CPU and an unreadable cpuinfo keep full 8-bit weights."""
    from vt_mm.deploy.quantization import x86_without_vnni

    def cpu(name, line):
        path = tmp_path / name
        path.write_text(f'processor\t: 0\n{line}\n')
        return str(path)

    assert x86_without_vnni(cpu('avx2', 'flags\t\t: fpu sse sse2 avx avx2 fma'))
    assert not x86_without_vnni(cpu('avx512', 'flags\t\t: fpu sse sse2 avx2 avx512f avx512_vnni'))
    assert not x86_without_vnni(cpu('avxvnni', 'flags\t\t: fpu sse sse2 avx avx2 avx_vnni'))
    assert not x86_without_vnni(cpu('arm', 'Features\t: fp asimd asimddp'))
    assert not x86_without_vnni(str(tmp_path / 'missing'))


def test_openvino_int8_compiles_vt_resnet18(tmp_path):
    """onnxruntime's quantizer scales every MatMul constant along axis 1, the reduction axis
    of a 2-D left operand (``A @ x``) and of a batched right operand; OpenVINO's CPU plugin
    then fails to compile the INT8 graph (``Check 'any_of(scale.size(), OC, 1U)' failed``)
    depending on the weights: VT-ResNet-18 with deploy_benchmark.py's weights from seed 1
    failed with onnxruntime's axes and with vt-mm's first fix (left operands per row only),
    and compiles with :func:`matmul_output_channel_axes`. The axes reach the graph: per row,
    per column, per tensor as the function says."""
    _require(['onnxruntime', 'openvino'])
    from vt_mm.analysis import trained_like_bn as benchmark_weights  # as deploy_benchmark.py
    from vt_mm.deploy.quantization import matmul_output_channel_axes
    torch.manual_seed(1)
    model, _, toolbox = build_model(osp.join(ROOT, 'configs/vt_resnet/vt-resnet18_8xb32_in1k.py'))
    benchmark_weights(model).eval()
    rng = np.random.default_rng(0)
    calibration = [rng.random((1, 3, 224, 224), np.float32) for _ in range(2)]
    report = deploy(model, ['openvino'], (224, 224), str(tmp_path), 'vtr18', toolbox=toolbox,
                    precision='int8', calibration=calibration, repeats=1, keep_going=False)
    result = report.results[0]
    assert result.ok and result.precision == 'int8', result.error
    assert _openvino_int8_convolutions(result.files[0]) > 10
    job = report.jobs['openvino']
    overrides = matmul_output_channel_axes(job.path('.prep.onnx'))
    import onnx
    from onnx import numpy_helper
    graph = onnx.load(job.path('.int8.onnx')).graph
    scales = {i.name: numpy_helper.to_array(i).size for i in graph.initializer}
    quantized = {n.input[0]: ([a.i for a in n.attribute if a.name == 'axis'], scales[n.input[1]])
                 for n in graph.node if n.op_type == 'DequantizeLinear'}
    kinds = set()
    for name, override in overrides.items():
        axes, num_scales = quantized[name + '_quantized']
        if 'axis' in override[0]:
            assert axes == [override[0]['axis']] and num_scales > 1, name
            kinds.add('per channel')
        else:
            assert num_scales == 1, name
            kinds.add('per tensor')
    assert kinds == {'per channel', 'per tensor'} and len(overrides) > 20


def test_matmul_constants_are_scaled_along_the_output_channels(tmp_path):
    """The axis rule of :func:`matmul_output_channel_axes` on a graph with each role: a right
    operand (2-D and batched) per column, a 2-D left operand per row, a batched left operand
    and a constant used both left and right per tensor; non-constants and other ops are not
    touched."""
    import onnx
    from onnx import TensorProto, helper

    from vt_mm.deploy.quantization import matmul_output_channel_axes

    def constant(name, *shape):
        return helper.make_tensor(name, TensorProto.FLOAT, shape, np.ones(shape).ravel())

    nodes = [
        helper.make_node('MatMul', ['x', 'w_right'], ['a']),  # (4, 8) @ (8, 6)
        helper.make_node('MatMul', ['w_left', 'a'], ['b']),  # (5, 4) @ (4, 6)
        helper.make_node('Reshape', ['b', 'shape'], ['c']),  # (1, 5, 6)
        helper.make_node('MatMul', ['c', 'w_right_batched'], ['d']),  # (1, 5, 6) @ (1, 6, 3)
        helper.make_node('MatMul', ['w_left_batched', 'd'], ['e']),  # (1, 2, 5) @ (1, 5, 3)
        helper.make_node('MatMul', ['w_both', 'w_both'], ['f']),  # (3, 3) @ (3, 3)
        helper.make_node('Conv', ['img', 'w_conv'], ['g']),
    ]
    graph = helper.make_graph(nodes, 'g', [
        helper.make_tensor_value_info('x', TensorProto.FLOAT, [4, 8]),
        helper.make_tensor_value_info('img', TensorProto.FLOAT, [1, 2, 5, 5])
    ], [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in 'efg'], [
        constant('w_right', 8, 6), constant('w_left', 5, 4),
        helper.make_tensor('shape', TensorProto.INT64, [3], [1, 5, 6]),
        constant('w_right_batched', 1, 6, 3), constant('w_left_batched', 1, 2, 5),
        constant('w_both', 3, 3), constant('w_conv', 4, 2, 3, 3)
    ])
    path = str(tmp_path / 'm.onnx')
    onnx.save(helper.make_model(graph), path)
    assert matmul_output_channel_axes(path) == {
        'w_right': [{'axis': 1}], 'w_left': [{'axis': 0}], 'w_right_batched': [{'axis': 2}],
        'w_left_batched': [{}], 'w_both': [{}]}
