from .visual_tokens import (
                            FilterTokenizer,
                            RecurrentTokenizer,
                            TokenPositionEncoding,
                            TokenProjector,
                            TokenTransformer,
                            VTModule,
)

__all__ = [
    'FilterTokenizer', 'RecurrentTokenizer', 'TokenPositionEncoding', 'TokenTransformer',
    'TokenProjector', 'VTModule'
]
