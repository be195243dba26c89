from .activations import TraceableGELU
from .tracing import tracing
from .visual_tokens import (
                            FilterTokenizer,
                            PointwiseConv1d,
                            PointwiseConv2d,
                            RecurrentTokenizer,
                            TokenPositionEncoding,
                            TokenProjector,
                            TokenTransformer,
                            VTModule,
                            adaptive_avg_pool2d,
                            set_fast_paths,
)

__all__ = [
    'FilterTokenizer', 'RecurrentTokenizer', 'TokenPositionEncoding', 'TokenTransformer',
    'TokenProjector', 'VTModule', 'PointwiseConv1d', 'PointwiseConv2d', 'adaptive_avg_pool2d',
    'set_fast_paths', 'tracing', 'TraceableGELU'
]
