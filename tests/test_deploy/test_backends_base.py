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
