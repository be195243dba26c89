"""Data transforms."""
from typing import Sequence

import numpy as np
from mmcv.transforms import RandomFlip
from mmengine.registry import TRANSFORMS


def swap_label_lut(swap_pairs: Sequence[Sequence[int]], num_values: int = 256) -> np.ndarray:
    """A lookup table mapping each label to its mirror (identity for unpaired labels)."""
    lut = np.arange(num_values, dtype=np.int64)
    seen = set()
    for pair in swap_pairs:
        if len(pair) != 2:
            raise ValueError(f'swap_pairs entries must be pairs of labels, got {pair!r}')
        a, b = int(pair[0]), int(pair[1])
        if a in seen or b in seen or a == b:
            raise ValueError(f'label {a if a in seen else b} appears in more than one swap pair '
                             f'(swap_pairs={list(swap_pairs)})')
        seen.update((a, b))
        lut[a], lut[b] = b, a
    return lut


@TRANSFORMS.register_module()
class RandomFlipSwapLabels(RandomFlip):
    """mmcv's RandomFlip that also swaps mirrored labels after a horizontal flip.

    For human parsing, flipping an image turns a left arm into a right arm: the label map must
    swap those classes, or the model is taught that both sides are the same class. LIP's pairs
    are ``[[14, 15], [16, 17], [18, 19]]`` (arm, leg, shoe). Vertical flips do not swap.

    Args:
        swap_pairs (Sequence[Sequence[int]]): Label pairs to exchange on a horizontal flip.
        **kwargs: ``prob`` and ``direction`` of :class:`mmcv.transforms.RandomFlip`.
    """

    def __init__(self, swap_pairs: Sequence[Sequence[int]], **kwargs):
        super().__init__(**kwargs)
        self.swap_pairs = [list(p) for p in swap_pairs]
        self._lut = swap_label_lut(self.swap_pairs)

    def _flip(self, results: dict) -> None:
        super()._flip(results)
        if results.get('flip_direction') != 'horizontal':
            return
        for key in results.get('seg_fields', ['gt_seg_map']):
            seg = results.get(key)
            if seg is not None:
                results[key] = self._lut[seg].astype(seg.dtype)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', swap_pairs={self.swap_pairs})'
