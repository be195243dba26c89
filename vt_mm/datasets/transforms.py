"""Label-swap lookup for left/right classes (used by the flip test-time augmentation).

Training flips that swap labels are mmcv's ``RandomFlip(swap_seg_labels=...)``.
"""
from typing import Sequence

import numpy as np


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
