"""Deployment: inference-time transforms, the ONNX export every backend starts from, the
backends (onnxruntime, OpenVINO, MNN, ncnn, TFLite; one module each under ``backends/``) and the
guard that keeps their converters offline. ``vt_mm.deploy.pipeline`` ties them together for
``tools/deployment/export.py``."""
from ..models.folding import fold_conv_bn, switch_to_deploy
from .offline import OfflineViolation, offline
from .onnx import (
                   BackboneNeck,
                   SegmentationLabels,
                   check_onnx,
                   export_onnx,
                   exportable,
                   onnx_op_counts,
                   simplify_onnx,
)

__all__ = [
    'fold_conv_bn', 'switch_to_deploy', 'BackboneNeck', 'SegmentationLabels', 'exportable',
    'export_onnx', 'check_onnx', 'simplify_onnx', 'onnx_op_counts', 'offline', 'OfflineViolation'
]
