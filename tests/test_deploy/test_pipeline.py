"""vt_mm/deploy/pipeline.py without a runtime: the parity tolerance and INT8 warning at their
boundaries (values pinned), output comparison, failed conversions leave no files."""
import numpy as np
import pytest
import torch.nn as nn

from vt_mm.deploy import pipeline
from vt_mm.deploy.backends import BACKENDS
from vt_mm.deploy.onnx import SegmentationLabels
from vt_mm.deploy.pipeline import DeployResult, compare_outputs, cosine


def test_contract_constants():
    assert pipeline.TOLERANCE == 1e-4
    assert pipeline.INT8_COSINE_WARNING == 0.99
    assert SegmentationLabels.NOT_PEAK_SCALE == 1e30
    assert SegmentationLabels.ARGMAX_LAYOUTS == ('rows', 'nhwc')
    assert list(BACKENDS) == ['mnn', 'ncnn', 'onnxruntime', 'openvino', 'tflite']
    capabilities = {name: (tuple(c.precisions), c.has_argmax, c.has_integer_tensors,
                           c.labels_argmax_layout)
                    for name, c in BACKENDS.items()}
    assert capabilities == {
        'onnxruntime': (('fp32', 'int8'), True, True, 'rows'),
        'openvino': (('fp32', 'int8', 'bf16'), True, True, 'nhwc'),
        'mnn': (('fp32', 'int8'), True, True, 'rows'),
        'ncnn': (('fp32', ), False, False, 'rows'),
        'tflite': (('fp32', 'int8'), True, True, 'nhwc'),
    }


@pytest.mark.parametrize('peak,diff,ok', [
    (0.5, 1e-4, True), (0.5, 1.0001e-4, False),  # absolute up to outputs of 1
    (1.0, 1e-4, True), (1.0, 1.0001e-4, False),
    (30.0, 3e-3, True), (30.0, 3.0001e-3, False),  # relative above 1
    (0.0, 0.0, True)])
def test_parity_tolerance_at_its_boundary(peak, diff, ok):
    result = DeployResult('x', files=['f'], max_abs_diff=diff, max_abs_output=peak,
                          latency_ms=1.0)
    assert result.ok is ok


def test_results_that_are_judged_elsewhere_or_failed():
    assert DeployResult('x', max_abs_diff=5.0, max_abs_output=1.0, agreement=0.5).ok
    for precision in ('int8', 'bf16'):
        assert DeployResult('x', max_abs_diff=5.0, max_abs_output=1.0, precision=precision).ok
    assert not DeployResult('x', max_abs_diff=5.0, max_abs_output=1.0, precision='fp32').ok
    assert not DeployResult('x', max_abs_diff=0.0, max_abs_output=1.0, error='E: boom').ok
    assert DeployResult('x', error='E: boom').line() == 'x: FAILED E: boom'


@pytest.mark.parametrize('cos,warns', [(0.99, False), (0.98999, True), (0.999, False),
                                       (None, False)])
def test_int8_warning_at_its_boundary(cos, warns):
    result = DeployResult('mnn', files=['a.mnn'], max_abs_diff=0.1, max_abs_output=1.0,
                          latency_ms=2.0, precision='int8', calibration_cosine=cos)
    warning = result.warning()
    assert (warning is not None) is warns
    if warns:
        assert warning.startswith(f'mnn: the INT8 graph departs from fp32 on a calibration '
                                  f'image (cosine {cos:.4f} < 0.99)')


def test_result_lines():
    logits = DeployResult('openvino', files=['/o/m.xml', '/o/m.bin'], max_abs_diff=1.5e-6,
                          max_abs_output=12.3456, latency_ms=3.21)
    assert logits.line() == 'openvino: max_abs_diff 1.50e-06 (max abs output 12.35) latency ' \
        '3.2 ms (m.xml)'
    labels = DeployResult('ncnn', files=['/o/m.param'], max_abs_diff=3.0, max_abs_output=19,
                          agreement=0.99875, latency_ms=10.06, calibration_cosine=0.99871)
    assert labels.line() == 'ncnn: agreement 99.875% max_abs_diff 3, cosine to fp32 on a ' \
        'calibration image 0.9987 latency 10.1 ms (m.param)'


def test_compare_outputs():
    expected = [np.arange(6, dtype=np.float32).reshape(1, 2, 3), np.full((2, ), -4.0)]
    got = [np.arange(6, dtype=np.float32).reshape(2, 3) + 0.5, np.array([-4.0, -3.0])]
    diff, peak, agreement = compare_outputs(got, expected, labels=False)
    assert (diff, peak, agreement) == (1.0, 5.0, None)  # the second output differs most
    labels = [np.array([[1, 2], [3, 4]])]
    assert compare_outputs([np.array([1, 2, 3, 5])], labels, labels=True) == (1.0, 4.0, 0.75)
    with pytest.raises(AssertionError, match=r'^1 outputs, PyTorch gives 2$'):
        compare_outputs(got[:1], expected, labels=False)
    with pytest.raises(AssertionError, match=r'output of shape \(5,\), PyTorch gives \(2,\)'):
        compare_outputs([got[0], np.zeros(5)], expected, labels=False)


def test_cosine():
    assert cosine([np.array([1.0, 0.0])], [np.array([2.0, 0.0])]) == pytest.approx(1.0)
    assert cosine([np.array([1.0, 0.0])], [np.array([0.0, 3.0])]) == 0.0
    assert cosine([np.array([1.0]), np.array([1.0])], [np.array([1.0]), np.array([-1.0])]) == 0.0
    assert cosine([np.zeros(3)], [np.zeros(3)]) == 0.0  # no division by zero


def test_torch_outputs_of_one_and_several_outputs():
    x = np.ones((1, 2), np.float32)
    one = pipeline.torch_outputs(nn.Identity(), x)
    assert len(one) == 1 and np.array_equal(one[0], x)

    class Two(nn.Module):

        def forward(self, x):
            return x, 2 * x

    two = pipeline.torch_outputs(Two(), x)
    assert len(two) == 2 and np.array_equal(two[1], 2 * x)


@pytest.mark.runtime
def test_failed_conversions_leave_no_files(tmp_path, monkeypatch):
    """A backend that fails removes what its conversion wrote; files of the graph stay while
    another backend uses them (export.py removes them when every backend failed)."""
    from vt_mm.deploy.backends.onnxruntime import OnnxRuntimeBackend

    def broken_convert(self, job):
        with open(job.path('.broken.bin'), 'wb') as f:
            f.write(b'half a model')
        raise RuntimeError('converter crashed')

    monkeypatch.setattr(OnnxRuntimeBackend, 'convert', broken_convert)
    model = nn.Sequential(nn.Conv2d(3, 4, 1))
    report = pipeline.deploy(_Classifier(model), ['onnxruntime'], (16, 16), str(tmp_path),
                             'm', toolbox='mmpretrain', repeats=1)
    assert report.results[0].error == 'RuntimeError: converter crashed'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.onnx']
    assert pipeline.remove_new_files(str(tmp_path), set()) == ['m.onnx']
    assert pipeline.files_in(str(tmp_path / 'none')) == set()


class _Classifier(nn.Module):
    """A network the mmpretrain wrapper can call (mode='tensor')."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, mode='tensor'):
        return self.net(x)


@pytest.mark.parametrize('precision,calibration,message', [
    ('fp16', None, r"^precision 'fp16': choose from fp32, int8, bf16$"),
    ('int8', None, r"^calibration inputs come with precision='int8' and only with it"),
    ('fp32', [np.zeros((1, 3, 16, 16), np.float32)],
     r"^calibration inputs come with precision='int8' and only with it"),
    ('bf16', [np.zeros((1, 3, 16, 16), np.float32)],
     r"^calibration inputs come with precision='int8' and only with it")])
def test_deploy_checks_precision_before_any_work(tmp_path, precision, calibration, message):
    with pytest.raises(ValueError, match=message):
        pipeline.deploy(_Classifier(nn.Conv2d(3, 4, 1)), ['onnxruntime'], (16, 16),
                        str(tmp_path / 'out'), 'm', toolbox='mmpretrain',
                        precision=precision, calibration=calibration)
    assert not (tmp_path / 'out').exists()


def _report(*results, precision='fp32'):
    job = pipeline.ConversionJob('m.onnx', None, None, [], [], '.', 'm', precision=precision,
                                 calibration=[] if precision == 'int8' else None)
    return pipeline.DeployReport(onnx='m.onnx', op_counts={}, outputs=['logits'], example=None,
                                 results=list(results), jobs={r.backend: job for r in results})


def test_deploy_report_and_load_runners(monkeypatch):
    good = DeployResult('onnxruntime', files=['m.onnx'], max_abs_diff=0.0, max_abs_output=1.0)
    bad = DeployResult('mnn', error='E: boom')
    assert _report(good).ok and not _report(good, bad).ok
    loaded = []

    class Fake:
        def load(self, files, job, num_threads=1):
            loaded.append((files, job.precision, num_threads))
            return 'runner'

    monkeypatch.setattr(pipeline, 'get_backend', lambda name: Fake())
    assert pipeline.load_runners(_report(good, bad), 3) == {'onnxruntime': 'runner'}
    assert pipeline.load_runners(_report(good), precision='bf16') == {'onnxruntime': 'runner'}
    assert pipeline.load_runners(_report(good), backends=['mnn']) == {}
    assert loaded == [(['m.onnx'], 'fp32', 3), (['m.onnx'], 'bf16', 1)]
    for precision, asked in (('int8', 'bf16'), ('fp32', 'int8')):
        result = DeployResult('onnxruntime', files=['m'], max_abs_diff=0.0, max_abs_output=1.0,
                              precision=precision)
        with pytest.raises(ValueError, match=rf"^onnxruntime: the {precision} files cannot run "
                           rf"in {asked}; deploy\(precision='{asked}'\) converts them$"):
            pipeline.load_runners(_report(result, precision=precision), precision=asked)
    int8 = DeployResult('onnxruntime', files=['m'], precision='int8')
    assert pipeline.load_runners(_report(int8, precision='int8'), precision='int8') == {
        'onnxruntime': 'runner'}
