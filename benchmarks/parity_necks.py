"""A control neck for the training-parity benchmark (analysis only, not part of vt_mm).

``FPNWithoutOutputConvs`` is mmdet's ``FPN`` with its 3x3 output convolutions replaced by
identities: the 1x1 laterals and the top-down sum only. It is VT-FPN with the visual tokens
taken out, so "VT-FPN minus this" measures what the tokens add, and "FPN minus this" what FPN's
3x3 convolutions (which VT-FPN replaces) add. Imported by the configs that
``training_parity.py --necks FPN-no-3x3`` writes.
"""
import torch.nn as nn
from mmdet.models.necks import FPN
from mmengine.registry import MODELS


@MODELS.register_module()
class FPNWithoutOutputConvs(FPN):
    """mmdet ``FPN`` whose output convolutions are identities (extra levels unchanged)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for i in range(self.backbone_end_level - self.start_level):
            self.fpn_convs[i] = nn.Identity()
