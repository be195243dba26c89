"""vt_mm/deploy without a runtime: the parity tolerance and INT8 warning at their boundaries (and
their values pinned: docs and users rely on them), output comparison, Conv-BN folding, the
backend interface's checks and messages, the labels head."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import vt_mm  # noqa: F401
from vt_mm.deploy import pipeline
from vt_mm.deploy.backends import BACKENDS, base, get_backend, running_in
from vt_mm.deploy.onnx import SegmentationLabels, exportable
from vt_mm.deploy.pipeline import DeployResult, compare_outputs, cosine
from vt_mm.deploy.transforms import fold_conv_bn, switch_to_deploy


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


def _conv_bn(bias, groups=1):
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=bias, groups=groups),
                          nn.BatchNorm2d(6), nn.ReLU())
    bn = block[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    return block


@pytest.mark.parametrize('bias,groups', [(True, 1), (False, 1), (False, 2)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_fold_conv_bn_keeps_outputs_and_removes_every_bn(bias, groups, channels_last):
    block = _conv_bn(bias, groups).train()  # folding puts it in eval mode itself
    x = torch.randn(2, 4, 7, 5)
    expected = block.eval()(x)
    block.train()
    folded = fold_conv_bn(block, channels_last=channels_last)
    assert folded is block and not block.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    assert torch.allclose(block(x), expected, atol=1e-5)
    assert block[0].weight.is_contiguous(memory_format=torch.channels_last) is channels_last


def test_switch_to_deploy_uses_each_modules_own_switch_then_folds_the_rest():
    calls = []

    class Own(nn.Module):

        def __init__(self):
            super().__init__()
            self.inner = _conv_bn(True)

        def switch_to_deploy(self):
            calls.append('own')
            fold_conv_bn(self.inner)

        def forward(self, x):
            return self.inner(x)

    model = nn.Sequential(Own(), _conv_bn(True)[:2])
    model.switch_to_deploy = lambda: calls.append('top')  # the model's own is not called
    x = torch.randn(1, 4, 5, 5)
    model[1][0] = nn.Conv2d(6, 6, 1)
    model[1][1] = nn.BatchNorm2d(6)
    expected = model.eval()(x)
    assert switch_to_deploy(model) is model
    assert calls == ['own']
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_conversion_job_paths_and_int8(tmp_path):
    job = base.ConversionJob(onnx_path='m.onnx', net=nn.Identity(), example=np.zeros(1),
                             output_names=['logits'], output_shapes=[(1, )],
                             out_dir=str(tmp_path / 'rel'), stem='m')
    assert job.path('.int8.onnx') == str(tmp_path / 'rel' / 'm.int8.onnx')
    assert job.int8 is False and job.precision == 'fp32' and job.shared_files == {}
    assert base.ConversionJob('m', None, None, [], [], '.', 'm', calibration=[]).int8 is True


def test_backend_availability_and_precision_messages():

    class Fake(base.Backend):
        name = 'fake'
        packages = ('json', 'no_such_package_x', 'no_such_package_y')

    assert Fake.missing() == ['no_such_package_x', 'no_such_package_y']
    with pytest.raises(base.BackendUnavailable, match=r"^backend 'fake' needs no_such_package_x, "
                       r'no_such_package_y, which is not installed: bash tools/setup_env\.sh '
                       r'--deploy installs every runtime'):
        Fake.check_available()
    Fake.check_precision('fp32')
    with pytest.raises(ValueError, match=r"^fake runs only fp32 in vt-mm; --precision bf16 is on "
                       r"\['openvino'\]$"):
        Fake.check_precision('bf16')
    with pytest.raises(ValueError, match=r'--precision fp16 is on no backend$'):
        Fake.check_precision('fp16')
    assert base.Backend().programs() == []
    with pytest.raises(NotImplementedError):
        base.Backend().convert(None)
    with pytest.raises(NotImplementedError):
        base.Backend().load([], None)


def test_get_backend_and_running_in(monkeypatch):
    with pytest.raises(ValueError, match=r"^unknown backend 'tensorrt'; choose from onnxruntime, "
                       r'openvino, mnn, ncnn, tflite$'):
        get_backend('tensorrt')
    ok, why = running_in('fp32', ['onnxruntime', 'ncnn'])
    assert ok == ['onnxruntime', 'ncnn'] and why == {}
    openvino = BACKENDS['openvino']

    def no_bf16(precision):
        if precision != 'fp32':
            raise ValueError('this CPU has no bf16')

    monkeypatch.setattr(openvino, 'check_precision', staticmethod(no_bf16))
    ok, why = running_in('bf16', ['onnxruntime', 'openvino'])
    assert ok == [] and why == {'openvino': 'this CPU has no bf16'}


def test_quiet_stdout_restores_file_descriptor_1(capfd):
    with base.quiet_stdout():
        print('hidden')
        import os
        os.write(1, b'hidden too\n')
    print('shown')
    assert capfd.readouterr().out == 'shown\n'


class _Logits(nn.Module):

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


def test_labels_head_arguments():
    for bad in (0, -1, 1.5, '2'):
        with pytest.raises(ValueError, match=rf'^logits_upsample must be an integer >= 1, got '
                           rf'{bad!r}$'):
            SegmentationLabels(nn.Identity(), logits_upsample=bad)
    with pytest.raises(ValueError, match=r"^argmax_layout must be one of \('rows', 'nhwc'\), got "
                       r"'nchw'$"):
        SegmentationLabels(nn.Identity(), argmax_layout='nchw')
    head = SegmentationLabels(nn.Identity().eval())
    assert head.training is False and head.logits_upsample == 1 and head.integer
    assert SegmentationLabels(nn.Identity().train()).training is True


@pytest.mark.parametrize('layout', ['rows', 'nhwc'])
@pytest.mark.parametrize('by_reduction', [False, True])
def test_labels_head_argmax_and_nearest_upsampling(layout, by_reduction):
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, 4)
    logits[0, :, 0, 0] = 1.0  # a tie: the first class wins
    head = SegmentationLabels(_Logits(logits), argmax_by_reduction=by_reduction,
                              argmax_layout=layout)
    labels = head(torch.zeros(2, 3, 6, 8))
    assert labels.dtype == torch.int32 and labels.shape == (2, 1, 6, 8)
    expected = logits.argmax(1, keepdim=True).repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.equal(labels, expected.to(torch.int32))
    assert labels[0, 0, 0, 0] == 0
    floats = SegmentationLabels(_Logits(logits), integer=False)(torch.zeros(2, 3, 6, 8))
    assert floats.dtype == torch.float32 and torch.equal(floats, expected.float())


def test_labels_head_upsamples_logits_capped_at_the_input():
    import torch.nn.functional as F
    torch.manual_seed(1)
    logits = torch.randn(1, 4, 3, 5)
    x = torch.zeros(1, 3, 9, 12)
    head = SegmentationLabels(_Logits(logits), logits_upsample=4)  # 12x20 capped to 9x12
    up = F.interpolate(logits, size=(9, 12), mode='bilinear', align_corners=False)
    assert torch.equal(head(x), up.argmax(1, keepdim=True).to(torch.int32))
    head = SegmentationLabels(_Logits(logits), logits_upsample=2, align_corners=True)
    up = F.interpolate(logits, size=(6, 10), mode='bilinear', align_corners=True)
    expected = F.interpolate(up.argmax(1, keepdim=True).float(), size=(9, 12), mode='nearest')
    assert torch.equal(head(x), expected.to(torch.int32))


def test_exportable_refuses_unknown_outputs_and_labels_of_non_segmentors():
    model = nn.Identity()
    with pytest.raises(ValueError, match=r"^output must be one of \('logits', 'labels'\), got "
                       r"'boxes'$"):
        exportable(model, 'mmseg', 'boxes')
    for toolbox in ('mmdet', 'mmpretrain'):
        with pytest.raises(ValueError, match=rf"output='labels' is for segmentors; this is an "
                           rf'{toolbox} model'):
            exportable(model, toolbox, 'labels')


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
