"""MNN: the ONNX graph converted by MNN's converter (fp32 weights; ``--fp16`` is not passed),
run by MNN's Express module API with the CPU backend at high precision.

3x3 convolutions run with MNN's smaller Winograd tiles (hint ``WINOGRAD_MEMORY_LEVEL`` = 1):
its default (3) picks the largest tile on large feature maps, which on x86 (MNN 3.6.1) is off
by 8e-4 on a 64-channel 64x64 conv pair with outputs of about 1 (level 1: 6e-7) and put VT-FPN
at 1.1e-4, past the 1e-4 fp32 check; level 1 costs VT-FPN 12% and VT-ResNet-50 2.5% of MNN
latency (SeaFormer, depthwise and 1x1 convs: nothing). An app that accepts that error sets
the hint back to 3.

MNN's Python wrapper ``MNN.tools.mnnconvert`` imports ``MNN.tools.utils.log``, which runs
``pip install aliyun-log-python-sdk`` and posts a usage log: the converter is called in the
compiled ``_tools`` extension module that the wrapper itself calls, so that none of it runs.
"""
import os

import numpy as np

from .base import Backend, quiet_stdout

# MNN::Interpreter::HintMode::WINOGRAD_MEMORY_LEVEL and the level that keeps fp32 parity
WINOGRAD_MEMORY_LEVEL, PRECISE_WINOGRAD_LEVEL = 3, 1


class MNNBackend(Backend):
    name = 'mnn'
    packages = ('MNN', '_tools')
    supports_int8 = False

    def convert(self, job):
        path = job.path('.mnn')
        args = ['mnnconvert', '-f', 'ONNX', '--modelFile', job.onnx_path, '--MNNModel', path,
                '--bizCode', 'vt_mm']
        with quiet_stdout():  # its import prints CPU features; one notice per Resize, ...
            import _tools  # MNN's converter (see the module docstring)
            _tools.mnnconvert(args)
        if not os.path.isfile(path):
            raise RuntimeError(f'MNN could not convert {job.onnx_path} (run MNN\'s converter '
                               f'by hand for its messages: {" ".join(args)})')
        return [path]

    def load(self, files, job, num_threads=1):
        config = {'backend': 'CPU', 'numThread': num_threads, 'precision': 'high'}
        with quiet_stdout():  # MNN prints its CPU features and 'MNN use high precision'
            import MNN
            import MNN.expr as expr
            runtime = MNN.nn.create_runtime_manager((config, ))
            runtime.set_hint(WINOGRAD_MEMORY_LEVEL, PRECISE_WINOGRAD_LEVEL)  # docstring
            module = MNN.nn.load_module_from_file(files[0], ['input'], list(job.output_names),
                                                  runtime_manager=runtime)

        def run(x: np.ndarray):
            outputs = module.forward([expr.const(x, list(x.shape), expr.NCHW)])
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            return [np.array(expr.convert(o, expr.NCHW).read()) for o in outputs]

        return run
