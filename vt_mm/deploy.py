"""Inference-time model transforms and ONNX export."""
from typing import Tuple

import torch
import torch.nn as nn
from mmcv.cnn import fuse_conv_bn

__all__ = ['switch_to_deploy', 'export_segmentor_onnx']


def switch_to_deploy(model: nn.Module) -> nn.Module:
    """Fold every Conv-BN pair of ``model`` into one conv (in place; for inference only).

    Modules with their own ``switch_to_deploy`` (SeaFormer, LightHead) use it; anything else is
    folded with mmcv's ``fuse_conv_bn``, which handles a conv followed by its BN in one module.
    """
    model.eval()
    handled = False
    for module in model.modules():
        if module is not model and hasattr(module, 'switch_to_deploy'):
            module.switch_to_deploy()
            handled = True
    if not handled or not hasattr(model, 'switch_to_deploy'):
        fuse_conv_bn(model)
    return model


class _SegmentorLogits(nn.Module):

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, inputs):
        return self.segmentor._forward(inputs)


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
        torch.onnx.export(_SegmentorLogits(segmentor), (dummy, ), path, input_names=['input'],
                          output_names=['logits'], opset_version=opset, dynamo=False)
