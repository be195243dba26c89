"""onnxruntime (CPU execution provider): runs the ONNX graph itself; INT8 by the static QDQ
graph of :mod:`vt_mm.deploy.quantization` (per-channel weights, calibrated on the job's
images)."""
import numpy as np

from ..quantization import quantize_qdq
from .base import Backend, register_backend


@register_backend('onnxruntime')
class OnnxRuntimeBackend(Backend):
    packages = ('onnxruntime', )
    precisions = ('fp32', 'int8')

    def convert(self, job):
        return [quantize_qdq(job) if job.int8 else job.onnx_path]

    def load(self, files, job, num_threads=1):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(files[0], options, providers=['CPUExecutionProvider'])

        def run(x: np.ndarray):
            return session.run(None, {'input': x})

        return run
