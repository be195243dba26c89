"""Linear classification head with dropout before the classifier (VT paper's advanced recipe)."""
from typing import Tuple

import torch.nn as nn
from mmengine.registry import MODELS
from mmpretrain.models.heads import LinearClsHead
from torch import Tensor


@MODELS.register_module()
class DropoutLinearClsHead(LinearClsHead):
    """mmpretrain's ``LinearClsHead`` with dropout on the pooled feature.

    Args:
        dropout_rate (float): Probability of zeroing a feature before the classifier.
            Default: 0.2.
        **kwargs: Arguments of ``LinearClsHead`` (``num_classes``, ``in_channels``, ``loss``...).
    """

    def __init__(self, dropout_rate: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f'dropout_rate must be in [0, 1), got {dropout_rate}')
        self.dropout = nn.Dropout(dropout_rate)

    def pre_logits(self, feats: Tuple[Tensor]) -> Tensor:
        return self.dropout(super().pre_logits(feats))
