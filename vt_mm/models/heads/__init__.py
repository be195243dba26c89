from .dropout_linear_cls_head import DropoutLinearClsHead
from .light_head import LightHead

__all__ = ['DropoutLinearClsHead', 'LightHead']
