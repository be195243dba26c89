from .demo_lip import LIP_CLASSES, LIP_FLIP_PAIRS, check_lip_root, make_demo_lip
from .transforms import swap_label_lut

__all__ = [
    'LIP_CLASSES', 'LIP_FLIP_PAIRS', 'check_lip_root', 'make_demo_lip',
    'swap_label_lut'
]
