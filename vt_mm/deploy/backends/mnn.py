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

INT8: MNN's own post-training quantizer (``mnnquant``: int8 activations with EMA-calibrated
ranges, per-channel int8 weights) on the fp32 ``.mnn``, written as ``NAME.int8.mnn``. It reads
calibration *images* and normalises them itself (``(pixel - mean) * normal``), so the job's
normalised inputs are written as 8-bit PNGs over each channel's calibration range, with the
``mean`` / ``normal`` that map them back (exact up to 1/255 of that range). It is called as
``_tools.mnnquant([argv])``: the three-string call of MNN 3.6.1's own wrapper aborts with
``std::length_error`` (and that wrapper imports the logger above), in a child process of the
same interpreter, started like the other converters' programs (pip and proxies disabled).
It keeps SeaFormer-T's accuracy but breaks VT-FPN's (benchmarks/reports/deployment.md), which the
export flags by the INT8 graph's cosine to fp32 on a calibration image
(``vt_mm.deploy.pipeline.INT8_COSINE_WARNING``); on x86 it is slower than MNN fp32.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from .base import Backend, quiet_stdout, register_backend

# run by the current interpreter (``programs``): MNN's quantizer, argv as its CLI takes it
QUANTIZE = ("import sys, _tools; "
            "sys.exit(0 if _tools.mnnquant(['mnnquant'] + sys.argv[1:]) else 1)")
# how mnnquant calibrates activation scales: EMA of the min / max. Its default, KL, lost 3.7
# mIoU on the SeaFormer-T demo model with 32 calibration images (75.40 vs fp32 79.12; EMA
# 78.85, onnxruntime's QDQ 78.81) and segfaults on VT-FPN; ADMM aborts (munmap_chunk) in MNN
# 3.6.1
FEATURE_QUANTIZE_METHOD = 'EMA'
# MNN::Interpreter::HintMode::WINOGRAD_MEMORY_LEVEL and the level that keeps fp32 parity
WINOGRAD_MEMORY_LEVEL, PRECISE_WINOGRAD_LEVEL = 3, 1


@register_backend('mnn')
class MNNBackend(Backend):
    packages = ('MNN', '_tools')
    precisions = ('fp32', 'int8')

    def programs(self):
        return [sys.executable]  # the quantizer's child process (QUANTIZE)

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
        return [self._quantize(path, job)] if job.int8 else [path]

    @staticmethod
    def _quantize(fp32_path: str, job) -> str:
        """``mnnquant`` on ``fp32_path`` with ``job.calibration`` (module docstring)."""
        import cv2
        path = job.path('.int8.mnn')
        inputs = np.concatenate([np.asarray(x, np.float32) for x in job.calibration])
        low, high = inputs.min(axis=(0, 2, 3)), inputs.max(axis=(0, 2, 3))
        normal = np.maximum(high - low, 1e-6) / 255
        with tempfile.TemporaryDirectory(dir=job.out_dir) as tmp:
            # mnnquant reads every file of the folder as an image (it aborts on a JSON there)
            images = os.path.join(tmp, 'images')
            os.makedirs(images)
            for i, x in enumerate(inputs):
                pixels = np.round((x - low[:, None, None]) / normal[:, None, None])
                rgb = np.clip(pixels, 0, 255).astype(np.uint8).transpose(1, 2, 0)
                cv2.imwrite(os.path.join(images, f'{i:04d}.png'), rgb[..., ::-1])
            config = os.path.join(tmp, 'quant.json')
            with open(config, 'w') as f:
                json.dump(dict(format='RGB', mean=(-low / normal).tolist(),
                               normal=normal.tolist(), width=int(inputs.shape[3]),
                               height=int(inputs.shape[2]), path=images + os.sep,
                               used_image_num=len(inputs),
                               feature_quantize_method=FEATURE_QUANTIZE_METHOD,
                               weight_quantize_method='MAX_ABS'), f)
            # in a child process: MNN aborts or segfaults its process on input it rejects (KL on
            # VT-FPN took the whole multi-backend report with it); the child imports only _tools
            proc = subprocess.run([sys.executable, '-c', QUANTIZE, fp32_path, path, config],
                                  capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.isfile(path):
            tail = ' | '.join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise RuntimeError(f'MNN could not quantize {fp32_path} (mnnquant exit status '
                               f'{proc.returncode}: {tail})')
        return path

    @classmethod
    def app_settings(cls, precision='fp32'):
        return ("runtime config {'backend': 'CPU', 'precision': 'high'} (C++ / Java: "
                'BackendConfig precision Precision_High) and the hint WINOGRAD_MEMORY_LEVEL 1: '
                "MNN's default precision 'normal' may compute in fp16 on ARMv8.2 cores")

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
