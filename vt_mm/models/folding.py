"""Inference-time model transforms (in place): Conv-BN folding and deploy mode. The models' own
``switch_to_deploy`` use them; deployment re-exports them (``vt_mm.deploy``)."""
import torch
import torch.nn as nn
from mmcv.cnn import fuse_conv_bn

__all__ = ['fold_conv_bn', 'switch_to_deploy']


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
