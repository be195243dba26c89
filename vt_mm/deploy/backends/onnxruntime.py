"""onnxruntime (CPU execution provider): runs the ONNX graph itself; INT8 by static QDQ
quantization (per channel) calibrated on the job's images."""
import numpy as np

from .base import Backend


class OnnxRuntimeBackend(Backend):
    name = 'onnxruntime'
    packages = ('onnxruntime', )
    supports_int8 = True

    def convert(self, job):
        if not job.int8:
            return [job.onnx_path]
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Images(CalibrationDataReader):

            def __init__(self, images):
                self.images = iter(images)

            def get_next(self):
                image = next(self.images, None)
                return None if image is None else {'input': image}

        prepared = job.path('.prep.onnx')
        quant_pre_process(job.onnx_path, prepared, skip_symbolic_shape=True)
        path = job.path('.int8.onnx')
        quantize_static(prepared, path, Images(job.calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        return [path]

    def load(self, files, job, num_threads=1):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(files[0], options, providers=['CPUExecutionProvider'])

        def run(x: np.ndarray):
            return session.run(None, {'input': x})

        return run
