"""TFLite (LiteRT): the PyTorch network converted by litert-torch (``torch.export`` -> TFLite
flatbuffer, fp32), run by ai-edge-litert's interpreter (XNNPACK).

INT8: litert-torch's PT2E route (static, symmetric, per-channel weights, per-tensor activations
with histogram observers) calibrated on the job's images. The model is then fully integer: its
input and outputs are int8 with a scale and zero point (the app quantizes the normalised image
as ``round(x / scale) + zero_point``); ``load``'s callable does that and dequantizes the
outputs, so it takes and returns float32 like the other backends. litert-torch 0.10's default
layout partitioner fails on quantized SeaFormer graphs ("Attempting to convert non-NHWC
compatible node to NHWC: dequantize_per_tensor_..."); its greedy partitioner converts them and
is used for INT8 only.

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

from .base import Backend, quiet_stdout, register_backend


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


@contextlib.contextmanager
def _layout_partitioner(name: str):
    key = 'LAYOUT_OPTIMIZE_PARTITIONER'  # read by litert_torch.config at conversion time
    saved = os.environ.get(key)
    os.environ[key] = name
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key)
        else:
            os.environ[key] = saved


def _quantized_pt2e(net, example: torch.Tensor, calibration):
    """``net`` exported, observed on the calibration images and converted to quantize /
    dequantize pairs (PT2E), with the quantizer litert-torch needs to lower them."""
    from litert_torch.quantize import pt2e_quantizer
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    graph = torch.export.export(net, (example, )).module()
    # an exported module cannot .eval(): move_exported_model_to_eval switches its dropout / BN
    # patterns instead
    graph = move_exported_model_to_eval(quantize_pt2e.prepare_pt2e(graph, quantizer))
    for image in calibration:
        graph(torch.from_numpy(image))
    graph = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(graph, fold_quantize=False))
    # it leaves the module's .training flag True, from which litert-torch warns 'converted in
    # training mode'
    graph.training = False
    return graph, quantizer


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float input as the tensor's dtype wants it (INT8 models: scale and zero point)."""
    if detail['dtype'] == np.float32:
        return x
    scale, zero_point = detail['quantization']
    info = np.iinfo(detail['dtype'])
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(detail['dtype'])


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail['quantization']
    if detail['dtype'] == np.float32 or scale == 0:  # float, or integer labels (no scale)
        return y.copy()
    return (y.astype(np.float32) - zero_point) * np.float32(scale)


@register_backend('tflite')
class TFLiteBackend(Backend):
    packages = ('litert_torch', 'ai_edge_litert')
    labels_argmax_layout = 'nhwc'  # keeps maps NHWC (SegmentationLabels)
    precisions = ('fp32', 'int8')
    nms_missing = ('litert-torch has no lowering for torchvision.ops.nms, so TFLite\'s '
                   'NON_MAX_SUPPRESSION builtins cannot be reached from the PyTorch graph')

    def convert(self, job):
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
        import litert_torch
        example = torch.from_numpy(job.example)
        with torch.no_grad(), nearest_resize_as_gather(), quiet_stdout():
            if job.int8:
                from litert_torch.quantize.quant_config import QuantConfig
                graph, quantizer = _quantized_pt2e(job.net.eval(), example, job.calibration)
                with _layout_partitioner('GREEDY'):
                    edge_model = litert_torch.convert(
                        graph, (example, ), quant_config=QuantConfig(pt2e_quantizer=quantizer))
            else:
                edge_model = litert_torch.convert(job.net.eval(), (example, ))
        path = job.path('.int8.tflite' if job.int8 else '.tflite')
        with quiet_stdout():
            edge_model.export(path)
        return [path]

    @classmethod
    def app_settings(cls, precision='fp32'):
        return ('the default CPU path (XNNPACK) computes in fp32; a GPU delegate needs '
                'precision loss disallowed (Android: GpuDelegate.Options'
                '().setPrecisionLossAllowed(false))')

    def load(self, files, job, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter
        interpreter = Interpreter(model_path=files[0], num_threads=num_threads)
        interpreter.allocate_tensors()
        (inp, ) = interpreter.get_input_details()
        outputs = interpreter.get_output_details()

        def run(x: np.ndarray):
            interpreter.set_tensor(inp['index'], _quantize(x, inp))
            interpreter.invoke()
            return [_dequantize(interpreter.get_tensor(o['index']), o) for o in outputs]

        return run
