from .pyramid_tnt import PyramidTNT
from .seaformer import SeaFormer
from .vt_resnet import VTResNet

__all__ = ['PyramidTNT', 'SeaFormer', 'VTResNet']
