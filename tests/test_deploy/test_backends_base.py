"""The backend interface (vt_mm/deploy/backends/base.py and the registry): jobs, availability
and precision messages."""
import numpy as np
import pytest
import torch.nn as nn

from vt_mm.deploy.backends import BACKENDS, base, get_backend, running_in


def test_conversion_job_paths_and_int8(tmp_path):
    job = base.ConversionJob(onnx_path='m.onnx', net=nn.Identity(), example=np.zeros(1),
                             output_names=['logits'], output_shapes=[(1, )],
                             out_dir=str(tmp_path / 'rel'), stem='m')
    assert job.path('.int8.onnx') == str(tmp_path / 'rel' / 'm.int8.onnx')
    assert job.int8 is False and job.precision == 'fp32' and job.shared_files == {}
    int8 = base.ConversionJob('m', None, None, [], [], '.', 'm', calibration=[], precision='int8')
    assert int8.int8 is True
    assert base.ConversionJob('m', None, None, [], [], '.', 'm', precision='bf16').int8 is False


@pytest.mark.parametrize('precision,calibration', [('fp32', []), ('bf16', []), ('int8', None)])
def test_conversion_job_calibration_comes_with_int8_only(precision, calibration):
    with pytest.raises(ValueError, match=r"^calibration inputs come with precision 'int8' and "
                       rf"only with it \(precision '{precision}', calibration "
                       rf"{'given' if calibration is not None else 'None'}\)$"):
        base.ConversionJob('m', None, None, [], [], '.', 'm', calibration=calibration,
                           precision=precision)
    with pytest.raises(ValueError, match=r"^precision 'fp16': choose from \('fp32', 'int8', "
                       r"'bf16'\)$"):
        base.ConversionJob('m', None, None, [], [], '.', 'm', precision='fp16')


def test_registry_is_every_module_of_the_package():
    """A runtime is one file: every module under backends/ registers one backend, named as
    the file, and nothing else is registered."""
    import os
    import os.path as osp
    folder = osp.dirname(base.__file__)
    modules = sorted(f[:-3] for f in os.listdir(folder)
                     if f.endswith('.py') and f not in ('__init__.py', 'base.py'))
    assert list(BACKENDS) == modules == ['mnn', 'ncnn', 'onnxruntime', 'openvino', 'tflite']
    for name, cls in BACKENDS.items():
        assert cls.name == name and cls.__module__ == f'vt_mm.deploy.backends.{name}'
    assert base.PRECISIONS == ('fp32', 'int8', 'bf16')


def test_register_backend(monkeypatch):
    monkeypatch.setattr(base, 'BACKENDS', dict(base.BACKENDS))

    @base.register_backend('fake')
    class Fake(base.Backend):
        precisions = ('fp32', 'int8')

    assert base.BACKENDS['fake'] is Fake and Fake.name == 'fake'
    again = base.register_backend('fake')(type('Fake', (base.Backend, ), {
        '__module__': Fake.__module__, '__qualname__': Fake.__qualname__}))
    assert base.BACKENDS['fake'] is again  # the same module imported again replaces its class
    with pytest.raises(ValueError, match=r"^backend 'onnxruntime' is registered twice: "
                       r'vt_mm\.deploy\.backends\.onnxruntime\.OnnxRuntimeBackend and '):
        base.register_backend('onnxruntime')(type('Other', (base.Backend, ), {}))
    with pytest.raises(TypeError, match=r"^register_backend\('x'\) decorates a Backend "
                       'subclass'):
        base.register_backend('x')(object)
    for precisions in (('int8', ), ('fp32', 'fp16')):
        with pytest.raises(ValueError, match=r"^backend 'y': precisions .* must include 'fp32' "
                           r"and only name \('fp32', 'int8', 'bf16'\)$"):
            base.register_backend('y')(type('Y', (base.Backend, ), {'precisions': precisions}))
    assert 'x' not in base.BACKENDS and 'y' not in base.BACKENDS


def test_backend_availability_and_precision_messages():

    class Fake(base.Backend):
        name = 'fake'
        packages = ('json', 'no_such_package_x', 'no_such_package_y')

    assert Fake.missing() == ['no_such_package_x', 'no_such_package_y']
    with pytest.raises(base.BackendUnavailable, match=r"^backend 'fake' needs no_such_package_x, "
                       r'no_such_package_y, which is not installed: bash dev/setup_env\.sh '
                       r'--deploy installs every runtime'):
        Fake.check_available()
    Fake.check_precision('fp32')
    with pytest.raises(ValueError, match=r"^fake runs only fp32 in vt-mm; --precision bf16 is on "
                       r"\['openvino'\]$"):
        Fake.check_precision('bf16')
    with pytest.raises(ValueError, match=r"^fake runs only fp32 in vt-mm; --precision int8 is on "
                       r"\['mnn', 'onnxruntime', 'openvino', 'tflite'\]$"):
        Fake.check_precision('int8')
    with pytest.raises(ValueError, match=r'^--precision fp16: choose from fp32, int8, bf16$'):
        Fake.check_precision('fp16')
    assert base.Backend().programs() == []
    with pytest.raises(NotImplementedError):
        base.Backend().convert(None)
    with pytest.raises(NotImplementedError):
        base.Backend().load([], None)


def test_get_backend_and_running_in(monkeypatch):
    with pytest.raises(ValueError, match=r"^unknown backend 'tensorrt'; choose from mnn, ncnn, "
                       r'onnxruntime, openvino, tflite$'):
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
    ok, why = running_in('int8', ['ncnn', 'tflite', 'mnn'])  # ncnn has none: left out silently
    assert ok == ['tflite', 'mnn'] and why == {}


def test_quiet_stdout_restores_file_descriptor_1(capfd):
    with base.quiet_stdout():
        print('hidden')
        import os
        os.write(1, b'hidden too\n')
    print('shown')
    assert capfd.readouterr().out == 'shown\n'


def test_the_guides_backend_is_one_file_that_deploys(tmp_path):
    """docs/en/advanced_guides/add_a_backend.md: its example file, imported as a module of the
    backends package, registers a backend that deploy() converts, runs and checks."""
    import importlib.util
    import os.path as osp
    import re

    from helpers import ROOT

    from vt_mm.deploy import pipeline
    with open(osp.join(ROOT, 'docs/en/advanced_guides/add_a_backend.md')) as f:
        (source, ) = re.findall(r'^```py\n(.*?)^```', f.read(), re.S | re.M)
    path = tmp_path / 'onnx_reference.py'
    path.write_text(source)
    spec = importlib.util.spec_from_file_location('vt_mm.deploy.backends.onnx_reference', path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        assert BACKENDS['onnx-reference'] is module.OnnxReferenceBackend
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))

        class Classifier(nn.Module):  # what the mmpretrain wrapper calls (mode='tensor')

            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, x, mode='tensor'):
                return self.net(x)

        report = pipeline.deploy(Classifier(), ['onnx-reference'], (16, 16),
                                 str(tmp_path / 'out'), 'm', toolbox='mmpretrain', repeats=1,
                                 keep_going=False)
        (result, ) = report.results
        assert result.ok and result.max_abs_diff < 1e-5, result.line()
        assert result.files == [report.onnx]
        with pytest.raises(ValueError, match=r"^onnx-reference runs only fp32 in vt-mm; "
                           r"--precision int8 is on \['mnn', 'onnxruntime', 'openvino', "
                           r"'tflite'\]"):
            module.OnnxReferenceBackend.check_precision('int8')
    finally:
        BACKENDS.pop('onnx-reference', None)
