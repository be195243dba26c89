"""TFLite (LiteRT): the PyTorch network converted by litert-torch (``torch.export`` -> TFLite
flatbuffer, fp32), run by ai-edge-litert's interpreter (XNNPACK).

litert-torch starts from PyTorch, not from the ONNX graph: onnx2tf (the ONNX route) needs
TensorFlow, downloads a calibration file even for float models, and rejects SeaFormer's
attention scaling without ``-dsm``. The input and outputs stay NCHW as in the ONNX graph (the
converter inserts the layout transposes inside the graph). litert-torch is installed without
its ``transformers`` dependency, which only its LLM tools use and which breaks mmpretrain's
import (requirements/deploy.txt).
"""
import os

import numpy as np
import torch

from .base import Backend


class TFLiteBackend(Backend):
    name = 'tflite'
    packages = ('litert_torch', 'ai_edge_litert')

    def convert(self, job):
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
        import litert_torch
        example = torch.from_numpy(job.example)
        with torch.no_grad():
            edge_model = litert_torch.convert(job.net.eval(), (example, ))
        path = job.path('.tflite')
        edge_model.export(path)
        return [path]

    def load(self, files, job, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter
        interpreter = Interpreter(model_path=files[0], num_threads=num_threads)
        interpreter.allocate_tensors()
        (inp, ) = interpreter.get_input_details()
        outputs = interpreter.get_output_details()

        def run(x: np.ndarray):
            interpreter.set_tensor(inp['index'], x)
            interpreter.invoke()
            return [interpreter.get_tensor(o['index']).copy() for o in outputs]

        return run
