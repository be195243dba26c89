"""Flip test-time augmentation for left/right-aware labels (LIP human parsing)."""
from typing import List, Sequence

import torch
from mmengine.registry import MODELS
from mmseg.models.segmentors.seg_tta import SegTTAModel

from ...datasets.transforms import swap_label_lut


@MODELS.register_module()
class FlipSwapSegTTAModel(SegTTAModel):
    """mmseg's ``SegTTAModel`` for datasets whose labels have a handedness.

    A horizontally flipped image shows a person's left arm where the right arm was, and a model
    trained with label-swapping flips (mmcv ``RandomFlip(swap_seg_labels=...)``) calls it "right
    arm". mmseg flips the flipped view's logits back spatially but keeps the channels, so
    averaging would mix left and right. Here the channels of every flipped view are swapped
    pairwise first, then the views are averaged as in ``SegTTAModel``.

    Args:
        module (dict): The segmentor.
        swap_pairs (Sequence[Sequence[int]]): Class pairs that swap under a horizontal flip,
            e.g. LIP's ``[[14, 15], [16, 17], [18, 19]]``.
    """

    def __init__(self, module: dict, swap_pairs: Sequence[Sequence[int]], **kwargs):
        super().__init__(module=module, **kwargs)
        self.swap_pairs = [list(p) for p in swap_pairs]
        self._lut = swap_label_lut(self.swap_pairs)

    def merge_preds(self, data_samples_list: List[list]) -> list:
        for data_samples in data_samples_list:
            for sample in data_samples:
                if sample.metainfo.get('flip'):
                    if sample.metainfo.get('flip_direction', 'horizontal') != 'horizontal':
                        continue  # a vertical flip keeps left and right
                    logits = sample.seg_logits.data
                    num = logits.shape[0]
                    if num <= max(max(p) for p in self.swap_pairs):
                        raise ValueError(f'swap_pairs {self.swap_pairs} name classes beyond the '
                                         f'model\'s {num} output channels')
                    perm = torch.from_numpy(self._lut[:num]).to(logits.device)
                    sample.seg_logits.data = logits[perm]
        return super().merge_preds(data_samples_list)
