"""OpenVINO (CPU plugin): the ONNX graph read by OpenVINO's ONNX frontend and saved as IR
(``.xml`` + ``.bin``) with fp32 weights (``save_model`` compresses to fp16 unless told not to);
inference precision pinned to f32 (the CPU plugin would pick bf16 on CPUs that have it, and
vt-mm's fp32 check is 1e-4). ``openvino.convert_model`` is not used: it carries OpenVINO's
telemetry.

bf16 (``precision='bf16'``, ``export.py --precision bf16``): the same fp32 IR compiled with
``INFERENCE_PRECISION_HINT`` bf16, on CPUs whose capabilities list BF16 (AVX-512 BF16, AMX).
Elsewhere the plugin silently stays in f32 or takes f16 for a bf16 hint, so ``check_precision``
raises there instead.

INT8: the QDQ graph of :func:`vt_mm.deploy.quantization.quantize_qdq` (the same calibration
and the same 7-bit rule on x86 without VNNI, whose u8s8 products saturate in OpenVINO's kernels
too). The frontend turns each QuantizeLinear / DequantizeLinear pair into a FakeQuantize, and
the CPU plugin's low-precision transformations run the quantized convolutions and products in int8
(``NAME.int8.xml``). NNCF, OpenVINO's own quantizer, is not used: one calibration path for
both runtimes, and no extra package.
"""
import functools

import numpy as np

from ..quantization import quantize_qdq
from .base import Backend, register_backend

# vt-mm's precision -> OpenVINO's INFERENCE_PRECISION_HINT (the INT8 IR's quantized operators
# run in int8 through the low-precision transformations; the rest stays f32)
INFERENCE_PRECISION = {'fp32': 'f32', 'int8': 'f32', 'bf16': 'bf16'}


@functools.lru_cache(maxsize=None)
def cpu_capabilities():
    """OpenVINO's CPU plugin ``OPTIMIZATION_CAPABILITIES`` (e.g. FP32, BF16, INT8), read once:
    ``check_precision`` runs at every conversion and every load."""
    import openvino as ov
    return tuple(ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))


@register_backend('openvino')
class OpenVINOBackend(Backend):
    packages = ('openvino', 'onnxruntime')  # onnxruntime quantizes for int8
    precisions = ('fp32', 'int8', 'bf16')
    labels_argmax_layout = 'nhwc'  # keeps maps NHWC (SegmentationLabels)

    def convert(self, job):
        import openvino as ov
        onnx = quantize_qdq(job) if job.int8 else job.onnx_path
        model = ov.Core().read_model(onnx)
        suffix = '.int8' if job.int8 else ''
        xml = job.path(suffix + '.xml')
        ov.save_model(model, xml, compress_to_fp16=False)
        return [xml, job.path(suffix + '.bin')]

    @classmethod
    def check_precision(cls, precision):
        super().check_precision(precision)
        capabilities = cpu_capabilities()
        if precision == 'bf16' and 'BF16' not in capabilities:
            raise ValueError(f'this CPU has no bf16 arithmetic (OpenVINO CPU capabilities: '
                             f'{", ".join(capabilities)}); use --precision fp32, or '
                             '--precision int8 for a faster graph')

    @classmethod
    def app_settings(cls, precision='fp32'):
        # the CPU plugin's default is bf16 on CPUs that have it, and OpenVINO does not take the
        # hint from the IR's rt_info (runtime_options): the app must pass it
        return (f"core.compile_model(xml, 'CPU', {{'INFERENCE_PRECISION_HINT': "
                f"'{INFERENCE_PRECISION[precision]}'}}): OpenVINO's CPU plugin computes in bf16 "
                'by default on CPUs that have it')

    def load(self, files, job, num_threads=1):
        import openvino as ov
        self.check_precision(job.precision)
        compiled = ov.Core().compile_model(
            files[0], 'CPU', {'INFERENCE_NUM_THREADS': num_threads,
                              'INFERENCE_PRECISION_HINT': INFERENCE_PRECISION[job.precision]})
        request = compiled.create_infer_request()
        outputs = compiled.outputs

        def run(x: np.ndarray):
            result = request.infer({0: x})
            return [np.asarray(result[o]) for o in outputs]

        return run
