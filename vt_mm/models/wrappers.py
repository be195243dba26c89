"""Networks from a normalised image to raw outputs, for every toolbox: what FLOP counts,
latency benchmarks and the ONNX export see of an mmseg segmentor, mmdet detector or mmpretrain
classifier."""
from typing import Optional

import torch.nn as nn

__all__ = ['ImageToOutputs', 'toolbox_of_model', 'unscaled_det_samples']


def toolbox_of_model(model: nn.Module) -> str:
    """'mmseg', 'mmdet' or 'mmpretrain': the toolbox whose model base class ``model`` is."""
    for cls in type(model).__mro__:
        root = cls.__module__.split('.')[0]
        if root in ('mmseg', 'mmdet', 'mmpretrain'):
            return root
    raise TypeError(f'{type(model).__name__} is not an mmseg, mmdet or mmpretrain model; pass '
                    "toolbox='mmseg' | 'mmdet' | 'mmpretrain'")


def unscaled_det_samples(x) -> list:
    """mmdet data samples for a batch ``x`` of normalised images taken as they are (no resize:
    scale factor 1, the image is its own original and padded size)."""
    from mmdet.structures import DetDataSample
    shape = tuple(x.shape[2:])
    return [DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                                        batch_input_shape=shape, scale_factor=(1.0, 1.0)))
            for _ in range(x.shape[0])]


class ImageToOutputs(nn.Module):
    """Normalised images (N, 3, H, W) -> raw network outputs, for every toolbox.

    Args:
        model: an mmseg segmentor, mmdet detector or mmpretrain classifier.
        toolbox (str, optional): 'mmseg', 'mmdet' or 'mmpretrain'; default: from the model's
            class (the toolbox its base class comes from).
    """

    def __init__(self, model: nn.Module, toolbox: Optional[str] = None):
        super().__init__()
        self.model, self.toolbox = model, toolbox or toolbox_of_model(model)
        # a new Module is in training mode; torch.onnx.export restores the wrapper's mode
        # afterwards, recursively, which would leave an eval model training (BN on batch stats)
        self.train(model.training)

    def forward(self, x):
        if self.toolbox == 'mmpretrain':
            return self.model(x, mode='tensor')
        if self.toolbox == 'mmdet':  # two-stage detectors need the image metadata
            return self.model._forward(x, unscaled_det_samples(x))
        return self.model._forward(x)
