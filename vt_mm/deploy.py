"""Inference-time model transforms and ONNX export."""
import contextlib
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import fuse_conv_bn

from .analysis import ImageToOutputs, toolbox_of_model

__all__ = [
    'fold_conv_bn', 'switch_to_deploy', 'BackboneNeck', 'exportable', 'export_onnx', 'check_onnx'
]


def fold_conv_bn(module: nn.Module, channels_last: bool = False) -> nn.Module:
    """Fold every Conv-BN pair of ``module`` into one conv (in place, inference only); optionally
    store the conv weights channels-last, which lets oneDNN skip layout reorders."""
    module.eval()
    fuse_conv_bn(module)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return module


def switch_to_deploy(model: nn.Module) -> nn.Module:
    """Inference mode for a whole model (in place).

    Submodules with their own ``switch_to_deploy`` (SeaFormer, LightHead: folding plus
    channels-last weights) use it; every Conv-BN pair left elsewhere is folded.
    """
    for module in list(model.modules()):
        if module is not model and hasattr(module, 'switch_to_deploy'):
            module.switch_to_deploy()
    return fold_conv_bn(model)


class BackboneNeck(ImageToOutputs):
    """An mmdet detector's backbone + neck (the part vt-mm provides): image -> feature maps.

    The heads' post-processing (anchors, NMS, RoI ops) is mmdet's and is exported by mmdeploy,
    not here.
    """

    def __init__(self, detector: nn.Module):
        super().__init__(detector, 'mmdet')

    def forward(self, x: torch.Tensor):
        return tuple(self.model.extract_feat(x))


def exportable(model: nn.Module, toolbox: Optional[str] = None) -> nn.Module:
    """The network that ``export_onnx`` writes: segmentors -> decode-head logits, classifiers ->
    class logits, detectors -> backbone + neck feature maps (:class:`BackboneNeck`)."""
    toolbox = toolbox or toolbox_of_model(model)
    return BackboneNeck(model) if toolbox == 'mmdet' else ImageToOutputs(model, toolbox)


@contextlib.contextmanager
def _traceable_mmseg_upsample():
    """mmseg's ``Upsample`` turns its output size into Python ints (``int(t * scale_factor)``),
    which a traced graph keeps as constants: at any other input size the decode head would
    resize to the example's sizes. While exporting, it interpolates by its scale factor instead
    (an ONNX Resize with scales): the same result, since ``int(t * k)`` is ``t * k`` exactly for
    the integer factors mmseg's heads use."""
    try:
        from mmseg.models.utils import Upsample
    except ImportError:  # no mmseg: nothing to patch
        yield
        return
    original = Upsample.forward

    def forward(self, x):
        if self.size or not float(self.scale_factor).is_integer():
            return original(self, x)
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode,
                             align_corners=self.align_corners)

    Upsample.forward = forward
    try:
        yield
    finally:
        Upsample.forward = original


def export_onnx(model: nn.Module, path: str, size: Tuple[int, int], dynamic: bool = True,
                toolbox: Optional[str] = None, opset: int = 17) -> List[str]:
    """Export a vt-mm model (mmseg segmentor, mmpretrain classifier, or an mmdet detector's
    backbone + neck) to ONNX; returns the output names.

    One input ``input`` (N, 3, H, W), a normalised image batch; ``dynamic`` makes N, H and W
    dynamic axes (the models that take any size: VT-FPN, SeaFormer, PyramidTNT, VT-ResNet),
    else the graph is fixed to ``size``. Outputs: ``logits`` (segmentors, classifiers) or
    ``feat0``, ``feat1``, ... (detector backbone + neck). Shape-dependent fast paths of vt-mm
    step aside while tracing (``vt_mm.models.layers.tracing``), so the graph is
    correct at every size; :func:`check_onnx` compares it with PyTorch.
    """
    net = exportable(model, toolbox).eval()
    dummy = torch.randn(1, 3, *size)
    with torch.no_grad():
        outs = net(dummy)
    names = (['logits'] if isinstance(outs, torch.Tensor) else
             [f'feat{i}' for i in range(len(outs))])
    axes = None
    if dynamic:
        axes = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
        for name in names:
            axes[name] = {0: 'batch'} if name == 'logits' and outs.dim() == 2 else {
                0: 'batch', 2: f'{name}_height', 3: f'{name}_width'}
    with torch.no_grad(), warnings.catch_warnings(), _traceable_mmseg_upsample():
        # shape-to-int conversions that stay correct (channel counts, static decisions) warn
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        # the TorchScript-based exporter: the dynamo one needs onnxscript, not in the stack
        torch.onnx.export(net, (dummy, ), path, input_names=['input'], output_names=names,
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    return names


def check_onnx(model: nn.Module, path: str, sizes: Sequence[Tuple[int, int]],
               toolbox: Optional[str] = None, seed: int = 0) -> List[dict]:
    """Runs the ONNX file with onnxruntime (CPU) at every size and compares each output with
    PyTorch's on the same random image; returns dict(size, shapes, max_abs_diff,
    max_abs_output) per size."""
    import onnxruntime as ort
    net = exportable(model, toolbox).eval()
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for hw in sizes:
        x = torch.randn(1, 3, *hw, generator=gen)
        with torch.no_grad():
            expected = net(x)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        got = session.run(None, {'input': x.numpy()})
        if [tuple(g.shape) for g in got] != [tuple(e.shape) for e in expected]:
            raise AssertionError(f'{path} at {hw}: onnxruntime gives shapes '
                                 f'{[g.shape for g in got]}, PyTorch {[e.shape for e in expected]}')
        diff = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
        rows.append(dict(size=tuple(hw), shapes=[tuple(g.shape) for g in got], max_abs_diff=diff,
                         max_abs_output=max(float(e.abs().max()) for e in expected)))
    return rows
