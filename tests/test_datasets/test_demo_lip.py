"""Demo LIP data and the left/right flip swap."""
import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from vt_mm.datasets import LIP_FLIP_PAIRS, check_lip_root, make_demo_lip


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            if f.endswith(('.png', '.txt')):
                h.update(f.encode())
                h.update(open(os.path.join(dirpath, f), 'rb').read())
    return h.hexdigest()


def test_demo_data_layout_and_determinism(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    make_demo_lip(str(a), num_train=6, num_val=2, size=96, seed=3)
    make_demo_lip(str(b), num_train=6, num_val=2, size=96, seed=3)
    assert _digest(a) == _digest(b)
    ids = (a / 'TrainVal_images' / 'train_id.txt').read_text().split()
    assert len(ids) == 6
    for i in ids:
        img = Image.open(a / 'TrainVal_images' / 'train_images' / f'{i}.jpg')
        lbl = np.asarray(
            Image.open(a / 'TrainVal_parsing_annotations' / 'train_segmentations' / f'{i}.png'))
        assert img.size == (96, 96) and img.mode == 'RGB'
        assert lbl.shape == (96, 96) and lbl.max() <= 19
    check_lip_root(str(a))
    c = tmp_path / 'c'
    make_demo_lip(str(c), num_train=6, num_val=2, size=96, seed=4)
    assert _digest(a) != _digest(c)


def test_demo_figures_have_left_parts_on_the_left(tmp_path):
    make_demo_lip(str(tmp_path), num_train=30, num_val=1, size=128, seed=0)
    seen = set()
    ann = tmp_path / 'TrainVal_parsing_annotations' / 'train_segmentations'
    for f in sorted(ann.iterdir()):
        lbl = np.asarray(Image.open(f))
        seen.update(np.unique(lbl).tolist())
        cols = np.arange(lbl.shape[1])[None].repeat(lbl.shape[0], 0)
        for left, right in LIP_FLIP_PAIRS:
            if (lbl == left).any() and (lbl == right).any():
                assert cols[lbl == left].mean() < cols[lbl == right].mean()
    assert seen == set(range(20)), f'classes never drawn: {set(range(20)) - seen}'


def test_missing_root_names_path_and_tool(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'nowhere.*make_demo_lip\.py'):
        check_lip_root(str(tmp_path / 'nowhere'))
