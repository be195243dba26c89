"""ONNX export of vt-mm models (every backend starts from this graph) and its check with
onnxruntime."""
import contextlib
import copy
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.wrappers import ImageToOutputs, toolbox_of_model

__all__ = ['BackboneNeck', 'SegmentationLabels', 'exportable', 'export_onnx', 'check_onnx',
           'onnx_op_counts']


class BackboneNeck(ImageToOutputs):
    """An mmdet detector's backbone + neck (the part vt-mm provides): image -> feature maps.

    The heads' post-processing (anchors, NMS, RoI ops) is mmdet's and is exported by mmdeploy,
    not here.
    """

    def __init__(self, detector: nn.Module):
        super().__init__(detector, 'mmdet')

    def forward(self, x: torch.Tensor):
        return tuple(self.model.extract_feat(x))


class SegmentationLabels(nn.Module):
    """A segmentor's network ending in labels: argmax over the classes at the logits' resolution
    (or after a bilinear upsample of the logits by ``logits_upsample``), then a nearest upsample
    of the label map to the input size, as int32 (N, 1, H, W).

    mmseg predicts by a bilinear resize of the logits to the image, then argmax: on a phone that
    tail costs more than SeaFormer itself (a 150-channel map at full size). Argmax first and a
    nearest resize of one channel give the same labels inside regions and differ along class
    boundaries, which costs thin and small classes: measured on SeaFormer-T trained on the demo data
    (benchmarks/reports/deployment.md), 97.0% of the pixels agree with mmseg's prediction but the
    mIoU drops from 79.1 to 67.2. ``logits_upsample`` buys it back at a known cost: the logits are
    resized bilinearly by that factor (capped at the input size; at the head's stride it is mmseg's
    own prediction at the input size) before the argmax. The final resize runs on the label map as
    float32 (exact for class ids below 2**24) because runtimes resize float tensors only.

    Args:
        net: image -> logits (N, C, h, w).
        argmax_by_reduction: for runtimes without an ArgMax operator (ncnn's wheel builds none):
            the first index of the maximum from max/min reductions and arithmetic, the same
            labels as ``argmax`` for finite logits (ties: the first class, as argmax).
        integer: int32 labels; False keeps float32 class ids for runtimes without integer
            tensors (ncnn), cast by the caller.
        logits_upsample: bilinear upsampling factor of the logits before the argmax (1: none).
        align_corners: of that resize (the decode head's, as mmseg resizes).
        argmax_layout: how the argmax reads the class map, the same labels either way (chosen
            per runtime, ``Backend.labels_argmax_layout``): ``'rows'`` transposes the map once
            to (N, h*w, C) rows and reduces each contiguous row (onnxruntime pushes a bare NHWC
            permute back into an ArgMax over the strided channel axis: 1.8 ms for 150 x 64 x 64
            instead of 0.9 ms); ``'nhwc'`` takes it over the last axis of a 4-D NHWC view, which
            runtimes that keep maps NHWC (TFLite, OpenVINO) read in their own layout (OpenVINO
            with ``'rows'``: SeaFormer-T labels graph 1.17x its logits graph, not 1.02x; an
            argmax over NCHW channels made litert-torch transpose the class map: 1.13x).
    """

    ARGMAX_LAYOUTS = ('rows', 'nhwc')

    # (max - logit) * NOT_PEAK_SCALE is 0 at a maximum and >= 1 (clamped to 1) below it for any
    # gap >= 1e-30 (every gap between distinct float32 logits above 1e-23 in magnitude); finite
    # for gaps up to 3e8
    NOT_PEAK_SCALE = 1e30

    def __init__(self, net: nn.Module, argmax_by_reduction: bool = False, integer: bool = True,
                 logits_upsample: int = 1, align_corners: bool = False,
                 argmax_layout: str = 'rows'):
        super().__init__()
        if not isinstance(logits_upsample, int) or logits_upsample < 1:
            raise ValueError(f'logits_upsample must be an integer >= 1, got {logits_upsample!r}')
        if argmax_layout not in self.ARGMAX_LAYOUTS:
            raise ValueError(f'argmax_layout must be one of {self.ARGMAX_LAYOUTS}, got '
                             f'{argmax_layout!r}')
        self.argmax_layout = argmax_layout
        self.net = net
        self.argmax_by_reduction, self.integer = argmax_by_reduction, integer
        self.logits_upsample, self.align_corners = logits_upsample, align_corners
        self.train(net.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if self.logits_upsample > 1:
            h, w = logits.shape[-2:]
            size = (min(int(h) * self.logits_upsample, int(x.shape[-2])),
                    min(int(w) * self.logits_upsample, int(x.shape[-1])))
            logits = F.interpolate(logits, size=size, mode='bilinear',
                                   align_corners=self.align_corners)
        if self.argmax_by_reduction:
            classes = logits.shape[1]
            peak = logits.amax(dim=1, keepdim=True)
            not_peak = ((peak - logits) * self.NOT_PEAK_SCALE).clamp(0, 1)  # 0 at each maximum
            index = torch.arange(classes, dtype=logits.dtype, device=logits.device)
            labels = (index.view(1, -1, 1, 1) + classes * not_peak).amin(dim=1, keepdim=True)
        else:
            nhwc = logits.permute(0, 2, 3, 1)  # argmax_layout in the docstring
            if self.argmax_layout == 'nhwc':
                labels = nhwc.argmax(dim=3).unsqueeze(1)
            else:
                n, h, w, classes = nhwc.shape
                labels = nhwc.reshape(n, h * w, classes).argmax(dim=2).reshape(n, 1, h, w)
            labels = labels.to(torch.float32)
        labels = F.interpolate(labels, size=x.shape[-2:], mode='nearest')
        return labels.to(torch.int32) if self.integer else labels


OUTPUTS = ('logits', 'labels', 'detections')


def exportable(model: nn.Module, toolbox: Optional[str] = None, output: str = 'logits',
               **labels_options) -> nn.Module:
    """The network that ``export_onnx`` and every backend convert: segmentors -> decode-head
    logits (``output='labels'``: :class:`SegmentationLabels`), classifiers -> class logits,
    detectors -> backbone + neck feature maps (:class:`BackboneNeck`), or with
    ``output='detections'`` the final detections
    (:func:`~vt_mm.deploy.detection.detections_graph`)."""
    if output not in OUTPUTS:
        raise ValueError(f'output must be one of {OUTPUTS}, got {output!r}')
    toolbox = toolbox or toolbox_of_model(model)
    if output == 'labels' and toolbox != 'mmseg':
        raise ValueError(f"output='labels' is for segmentors; this is an {toolbox} model "
                         "(use output='logits')")
    if output == 'detections':
        if toolbox != 'mmdet':
            raise ValueError(f"output='detections' is for mmdet detectors; this is an "
                             f"{toolbox} model (use output='logits')")
        from .detection import detections_graph
        return detections_graph(model, **labels_options)
    net = BackboneNeck(model) if toolbox == 'mmdet' else ImageToOutputs(model, toolbox)
    if output != 'labels':
        return net
    labels_options.setdefault('align_corners', getattr(model.decode_head, 'align_corners', False))
    return SegmentationLabels(net, **labels_options)


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
                toolbox: Optional[str] = None, opset: int = 17, output: str = 'logits',
                simplify: bool = False, **labels_options) -> List[str]:
    """Export a vt-mm model (mmseg segmentor, mmpretrain classifier, or an mmdet detector's
    backbone + neck) to ONNX; returns the output names.

    One input ``input`` (N, 3, H, W), a normalised image batch; ``dynamic`` makes N, H and W
    dynamic axes (the models that take any size: VT-FPN, SeaFormer, PyramidTNT, VT-ResNet),
    else the graph is fixed to ``size``. Outputs: ``logits`` (segmentors, classifiers),
    ``feat0``, ``feat1``, ... (detector backbone + neck) or, with ``output='detections'``
    (static only), ``dets``, ``labels``, ``num_dets`` and for Mask R-CNN ``masks``
    (:mod:`vt_mm.deploy.detection`).
    Shape-dependent fast paths of vt-mm step aside while tracing
    (``vt_mm.models.layers.tracing``), so the graph is correct at every size; :func:`check_onnx`
    compares it with PyTorch. ``output='labels'`` ends a segmentor's graph in labels
    (:class:`SegmentationLabels`). ``simplify`` folds the
    graph with onnxslim (constants such as the position-embedding resizes, shape arithmetic,
    Identity chains); it needs the ``deploy`` extra and pays off for static shapes.
    """
    if output == 'detections' and dynamic:
        raise ValueError("output='detections' graphs are static (their candidate counts follow "
                         'from the input size): pass dynamic=False')
    net = exportable(model, toolbox, output, **labels_options).eval()
    dummy = torch.randn(1, 3, *size)
    with torch.no_grad():
        outs = net(dummy)
    if output == 'detections':
        from .detection import output_names
        names = list(output_names(net))
    else:
        names = ([output] if isinstance(outs, torch.Tensor) else
                 [f'feat{i}' for i in range(len(outs))])
    axes = None
    if dynamic:
        axes = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
        for name in names:
            axes[name] = {0: 'batch'} if isinstance(outs, torch.Tensor) and outs.dim() == 2 else {
                0: 'batch', 2: f'{name}_height', 3: f'{name}_width'}
    with torch.no_grad(), warnings.catch_warnings(), _traceable_mmseg_upsample():
        # shape-to-int conversions that stay correct (channel counts, static decisions) warn
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        # the TorchScript-based exporter: the dynamo one needs onnxscript, not in the stack
        torch.onnx.export(net, (dummy, ), path, input_names=['input'], output_names=names,
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    if simplify:
        simplify_onnx(path)
    return names


def simplify_onnx(path: str) -> None:
    """Folds the graph at ``path`` in place with onnxslim (constant folding, shape arithmetic,
    dead and Identity nodes), repeated while Shape nodes are left and a pass removes some; the
    outputs stay the same (checked by the backends' comparison)."""
    try:
        import onnx
        import onnxslim
    except ImportError as e:
        raise ImportError(f'simplify=True needs onnxslim ({e}); install the deploy extra: '
                          'bash dev/setup_env.sh --deploy') from e
    # again while shape arithmetic is left: one pass leaves the Shape chains whose inputs only
    # its own folding made static (PyramidTNT-Ti: 17 Shape, 24 Gather after one pass, none after
    # two); a pass costs seconds on large graphs, so graphs without Shape nodes get one
    model = onnx.load(path)
    for _ in range(4):
        size = len(model.graph.node)
        model = onnxslim.slim(model)
        shapes_left = any(node.op_type == 'Shape' for node in model.graph.node)
        if len(model.graph.node) == size or not shapes_left:
            break
    onnx.save(model, path)


def onnx_op_counts(path: str) -> dict:
    """{op type: count} of the graph at ``path`` (main graph), most frequent first."""
    import collections

    import onnx
    counts = collections.Counter(node.op_type for node in onnx.load(path).graph.node)
    return dict(counts.most_common())


def check_onnx(model: nn.Module, path: str, sizes: Sequence[Tuple[int, int]],
               toolbox: Optional[str] = None, seed: int = 0, output: str = 'logits',
               reference_dtype: torch.dtype = torch.float32) -> List[dict]:
    """Runs the ONNX file with onnxruntime (CPU) at every size and compares each output with
    PyTorch's on the same random image; returns dict(size, shapes, max_abs_diff,
    max_abs_output) per size.

    ``reference_dtype=torch.float64`` compares with a float64 copy of the model instead (the
    graph still runs in float32): where a random-weight model is ill-conditioned, PyTorch's own
    float32 result can be the one that is off (SeaFormer-T at 256x256,
    benchmarks/reports/deployment.md), and
    float64 tells the graph's error from eager mode's rounding."""
    import onnxruntime as ort
    net = exportable(model, toolbox, output).eval()
    if reference_dtype != torch.float32:
        net = copy.deepcopy(net).to(reference_dtype)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for hw in sizes:
        x = torch.randn(1, 3, *hw, generator=gen)
        with torch.no_grad():
            expected = net(x.to(reference_dtype))
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        got = session.run(None, {'input': x.numpy()})
        if [tuple(g.shape) for g in got] != [tuple(e.shape) for e in expected]:
            raise AssertionError(f'{path} at {hw}: onnxruntime gives shapes '
                                 f'{[g.shape for g in got]}, PyTorch {[e.shape for e in expected]}')
        diff = max(float(np.abs(g.astype(np.float64) - e.double().numpy()).max())
                   for g, e in zip(got, expected))
        rows.append(dict(size=tuple(hw), shapes=[tuple(g.shape) for g in got], max_abs_diff=diff,
                         max_abs_output=max(float(e.abs().max()) for e in expected)))
    return rows
