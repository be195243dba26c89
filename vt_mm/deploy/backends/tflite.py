"""TFLite (LiteRT): the PyTorch network converted by litert-torch (``torch.export`` -> TFLite
flatbuffer, fp32), run by ai-edge-litert's interpreter (XNNPACK).

litert-torch starts from PyTorch, not from the ONNX graph: onnx2tf (the ONNX route) needs
TensorFlow, downloads a calibration file even for float models, and rejects SeaFormer's
attention scaling without ``-dsm``. Nearest resizes are converted as gathers
(:func:`nearest_resize_as_gather`). The input and outputs stay NCHW as in the ONNX graph (the
converter inserts the layout transposes inside the graph). litert-torch is installed without
its ``transformers`` dependency, which only its LLM tools use and which breaks mmpretrain's
import (requirements/deploy.txt).
"""
import contextlib
import os

import numpy as np
import torch
import torch.nn.functional as F

from .base import Backend


def nearest_indices(length: int, out: int) -> np.ndarray:
    """PyTorch's source row of each output row of a nearest resize to ``out`` given by size
    (ATen: ``min(floor(dst * (float(length) / out)), length - 1)`` in float32; exact doubling
    as ``dst >> 1``)."""
    dst = np.arange(out)
    if out == length:
        return dst
    if out == 2 * length:
        return dst >> 1
    scale = np.float32(length) / np.float32(out)
    return np.minimum(np.floor(dst.astype(np.float32) * scale).astype(np.int64), length - 1)


@contextlib.contextmanager
def nearest_resize_as_gather():
    """While converting: ``F.interpolate(x, size=..., mode='nearest')`` written as two index
    gathers with constant indices.

    litert-torch 0.10 lowers a nearest resize whose ratio is not an integer with other source
    indices than PyTorch's (2x4 -> 4x6 differs by 2.8 on random data): mmdet's FPN resizes each
    level to the next one's size, so detectors at most input sizes were wrong. The indices are
    computed in numpy (:func:`nearest_indices`, PyTorch's formula), outside the traced graph,
    so the values are PyTorch's exactly.
    """
    original = F.interpolate

    def interpolate(input, size=None, scale_factor=None, mode='nearest', align_corners=None,
                    recompute_scale_factor=None, antialias=False):
        if mode != 'nearest' or size is None or input.dim() != 4:
            return original(input, size, scale_factor, mode, align_corners,
                            recompute_scale_factor, antialias)
        out_h, out_w = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        h, w = (int(s) for s in input.shape[-2:])
        rows = torch.from_numpy(nearest_indices(h, out_h)).to(input.device)
        cols = torch.from_numpy(nearest_indices(w, out_w)).to(input.device)
        return input.index_select(2, rows).index_select(3, cols)

    F.interpolate = interpolate
    try:
        yield
    finally:
        F.interpolate = original


class TFLiteBackend(Backend):
    name = 'tflite'
    packages = ('litert_torch', 'ai_edge_litert')

    def convert(self, job):
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
        import litert_torch
        example = torch.from_numpy(job.example)
        with torch.no_grad(), nearest_resize_as_gather():
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
