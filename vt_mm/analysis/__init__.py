"""Analysis helpers of the tools and benchmarks, one module each: building a model from a config
(:mod:`.building`), counting FLOPs (:mod:`.flops`), estimating activation memory
(:mod:`.memory`); timing is :mod:`vt_mm.utils.timing` and the image-to-outputs wrapper
:mod:`vt_mm.models.wrappers`, re-exported here for the tools."""
from ..models.wrappers import ImageToOutputs, toolbox_of_model
from ..utils.timing import time_alternately
from .building import (
                       build_model,
                       default_shape,
                       quiet_mmengine_logs,
                       resolve_config_path,
                       trained_like_bn,
)
from .flops import baddbmm_flop_jit, count_flops, flop_analyzer, sdpa_flop_jit
from .memory import available_memory_bytes, estimate_peak_bytes, peak_activation_bytes

__all__ = [
    'build_model', 'default_shape', 'resolve_config_path', 'trained_like_bn',
    'quiet_mmengine_logs', 'ImageToOutputs', 'toolbox_of_model', 'count_flops', 'flop_analyzer',
    'sdpa_flop_jit', 'baddbmm_flop_jit', 'time_alternately', 'peak_activation_bytes',
    'estimate_peak_bytes', 'available_memory_bytes'
]
