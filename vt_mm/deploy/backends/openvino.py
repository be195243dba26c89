"""OpenVINO (CPU plugin): the ONNX graph read by OpenVINO's ONNX frontend and saved as IR
(``.xml`` + ``.bin``) with fp32 weights (``save_model`` compresses to fp16 unless told not to);
inference precision pinned to f32 (the CPU plugin would pick bf16 on CPUs that have it).
``openvino.convert_model`` is not used: it carries OpenVINO's telemetry."""
import numpy as np

from .base import Backend


class OpenVINOBackend(Backend):
    name = 'openvino'
    packages = ('openvino', )
    labels_argmax_layout = 'nhwc'  # keeps maps NHWC (SegmentationLabels)

    def convert(self, job):
        import openvino as ov
        model = ov.Core().read_model(job.onnx_path)
        xml = job.path('.xml')
        ov.save_model(model, xml, compress_to_fp16=False)
        return [xml, job.path('.bin')]

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
