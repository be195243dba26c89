"""The left/right label swap (vt_mm/datasets/transforms.py) and flips that use it."""
import numpy as np
import pytest

from vt_mm.datasets import LIP_FLIP_PAIRS
from vt_mm.datasets.transforms import swap_label_lut


def test_flip_swaps_left_right_labels():
    """The LIP configs' flip (mmcv RandomFlip with swap_seg_labels) turns a left arm on the left
    into a right arm on the right; unpaired classes keep their label."""
    from mmcv.transforms import RandomFlip
    from mmengine.config import Config
    cfg = Config.fromfile('configs/_base_/datasets/lip.py')
    (flip, ) = [dict(t) for t in cfg.train_pipeline if 'Flip' in t['type']]
    assert flip.pop('type') == 'RandomFlip'
    assert [tuple(p) for p in flip['swap_seg_labels']] == [tuple(p) for p in LIP_FLIP_PAIRS]
    seg = np.zeros((4, 6), np.uint8)
    seg[:, 0] = 14  # left arm on the left
    seg[:, 1] = 16
    seg[:, 2] = 5
    seg[:, 5] = 19
    results = dict(img=np.zeros((4, 6, 3), np.uint8), gt_seg_map=seg.copy(),
                   seg_fields=['gt_seg_map'])
    out = RandomFlip(**dict(flip, prob=1.0))(results)
    flipped = out['gt_seg_map']
    assert (flipped[:, 5] == 15).all()  # the left arm moved right and became the right arm
    assert (flipped[:, 4] == 17).all()
    assert (flipped[:, 3] == 5).all()  # unpaired classes keep their label
    assert (flipped[:, 0] == 18).all()


def test_swap_lut_rejects_bad_pairs():
    lut = swap_label_lut([[1, 2]])
    assert lut[1] == 2 and lut[2] == 1 and lut[255] == 255
    with pytest.raises(ValueError, match='more than one'):
        swap_label_lut([[1, 2], [2, 3]])


def test_swap_label_lut_maps_pairs_both_ways_and_keeps_the_rest():
    lut = swap_label_lut([[14, 15], (18, 19)])
    assert lut.dtype == np.int64 and len(lut) == 256
    assert (lut[14], lut[15], lut[18], lut[19]) == (15, 14, 19, 18)
    others = [i for i in range(256) if i not in (14, 15, 18, 19)]
    assert (lut[others] == others).all()
    assert len(swap_label_lut([], num_values=7)) == 7
    assert swap_label_lut([[0, 6]], num_values=7)[6] == 0


@pytest.mark.parametrize('pairs,message', [
    ([[1]], r'swap_pairs entries must be pairs of labels, got \[1\]'),
    ([[1, 2, 3]], r'swap_pairs entries must be pairs of labels, got \[1, 2, 3\]'),
    ([[1, 2], [2, 3]], r'label 2 appears in more than one swap pair'),
    ([[1, 2], [3, 1]], r'label 1 appears in more than one swap pair'),
    ([[4, 4]], r'label 4 appears in more than one swap pair')])
def test_swap_label_lut_refuses_bad_pairs(pairs, message):
    with pytest.raises(ValueError, match=message):
        swap_label_lut(pairs)
