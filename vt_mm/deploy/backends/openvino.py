"""OpenVINO (CPU plugin): the ONNX graph read by OpenVINO's ONNX frontend and saved as IR
(``.xml`` + ``.bin``) with fp32 weights (``save_model`` compresses to fp16 unless told not to);
inference precision pinned to f32 (the CPU plugin would pick bf16 on CPUs that have it).
``openvino.convert_model`` is not used: it carries OpenVINO's telemetry.

INT8: the QDQ graph of :func:`~.onnxruntime.quantize_qdq` (the same calibration and the same
7-bit rule on x86 without VNNI, whose u8s8 products saturate in OpenVINO's kernels too). The
frontend turns each QuantizeLinear / DequantizeLinear pair into a FakeQuantize, and the CPU
plugin's low-precision transformations run the quantized convolutions and products in int8
(``NAME.int8.xml``). NNCF, OpenVINO's own quantizer, is not used: one calibration path for
both runtimes, and no extra package.
"""
import numpy as np

from .base import Backend
from .onnxruntime import quantize_qdq


class OpenVINOBackend(Backend):
    name = 'openvino'
    packages = ('openvino', 'onnxruntime')  # onnxruntime quantizes for --int8
    supports_int8 = True
    labels_argmax_layout = 'nhwc'  # keeps maps NHWC (SegmentationLabels)

    def convert(self, job):
        import openvino as ov
        onnx = quantize_qdq(job) if job.int8 else job.onnx_path
        model = ov.Core().read_model(onnx)
        precision = '.int8' if job.int8 else ''
        xml = job.path(precision + '.xml')
        ov.save_model(model, xml, compress_to_fp16=False)
        return [xml, job.path(precision + '.bin')]

    def load(self, files, job, num_threads=1):
        import openvino as ov
        compiled = ov.Core().compile_model(
            files[0], 'CPU', {'INFERENCE_NUM_THREADS': num_threads,
                              'INFERENCE_PRECISION_HINT': 'f32'})
        request = compiled.create_infer_request()
        outputs = compiled.outputs

        def run(x: np.ndarray):
            result = request.infer({0: x})
            return [np.asarray(result[o]) for o in outputs]

        return run
