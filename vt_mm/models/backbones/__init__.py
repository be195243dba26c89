from .pyramid_tnt import PyramidTNT

__all__ = ['PyramidTNT']
