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
    assert list(BACKENDS) == ['onnxruntime', 'openvino', 'mnn', 'ncnn', 'tflite']
    capabilities = {name: (c.supports_int8, tuple(c.precisions), c.has_argmax,
                           c.has_integer_tensors, c.labels_argmax_layout)
                    for name, c in BACKENDS.items()}
    assert capabilities == {
        'onnxruntime': (True, ('fp32', ), True, True, 'rows'),
        'openvino': (True, ('fp32', 'bf16'), True, True, 'nhwc'),
        'mnn': (True, ('fp32', ), True, True, 'rows'),
        'ncnn': (False, ('fp32', ), False, False, 'rows'),
        'tflite': (True, ('fp32', ), True, True, 'nhwc'),
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
    assert DeployResult('x', max_abs_diff=5.0, max_abs_output=1.0, reduced_precision=True).ok
    assert not DeployResult('x', max_abs_diff=0.0, max_abs_output=1.0, error='E: boom').ok
    assert DeployResult('x', error='E: boom').line() == 'x: FAILED E: boom'


@pytest.mark.parametrize('cos,warns', [(0.99, False), (0.98999, True), (0.999, False),
                                       (None, False)])
def test_int8_warning_at_its_boundary(cos, warns):
    result = DeployResult('mnn', files=['a.mnn'], max_abs_diff=0.1, max_abs_output=1.0,
                          latency_ms=2.0, reduced_precision=True, calibration_cosine=cos)
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
    assert report['results'][0].error == 'RuntimeError: converter crashed'
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
