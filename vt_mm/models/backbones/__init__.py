from .pyramid_tnt import PyramidTNT
from .vt_resnet import VTResNet

__all__ = ['PyramidTNT', 'VTResNet']
