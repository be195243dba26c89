from . import backbones, heads, layers, necks, segmentors  # noqa: F401
