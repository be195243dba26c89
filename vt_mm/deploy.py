"""Inference-time model transforms and ONNX export."""
from typing import Tuple

import torch
import torch.nn as nn
from mmcv.cnn import fuse_conv_bn

from .analysis import ImageToOutputs

__all__ = ['fold_conv_bn', 'switch_to_deploy', 'export_segmentor_onnx']


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


def export_segmentor_onnx(segmentor: nn.Module, path: str, size: Tuple[int, int],
                          opset: int = 17) -> None:
    """Export an mmseg segmentor (normalised image -> decode-head logits) to ONNX.

    The graph has one input ``input`` (1, 3, H, W) and one output ``logits``; resizing to the
    image size and argmax are left to the caller, as in mmdeploy's segmentation exports.
    """
    segmentor.eval()
    dummy = torch.randn(1, 3, *size)
    with torch.no_grad():
        # the TorchScript-based exporter: the dynamo one needs onnxscript, not in the stack
        torch.onnx.export(ImageToOutputs(segmentor, 'mmseg'), (dummy, ), path,
                          input_names=['input'], output_names=['logits'], opset_version=opset,
                          dynamo=False)
