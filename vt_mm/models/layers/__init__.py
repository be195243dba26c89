from .activations import TraceableGELU
from .tracing import tracing
from .visual_tokens import (
                            FilterTokenizer,
                            RecurrentTokenizer,
                            TokenPositionEncoding,
                            TokenProjector,
                            TokenTransformer,
                            VTModule,
                            adaptive_avg_pool2d,
)

__all__ = [
    'FilterTokenizer', 'RecurrentTokenizer', 'TokenPositionEncoding', 'TokenTransformer',
    'TokenProjector', 'VTModule', 'adaptive_avg_pool2d', 'tracing', 'TraceableGELU'
]
