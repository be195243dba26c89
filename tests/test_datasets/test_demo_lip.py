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


@pytest.mark.parametrize('missing', ['TrainVal_images/train_images',
                                     'TrainVal_images/val_images',
                                     'TrainVal_parsing_annotations/train_segmentations',
                                     'TrainVal_parsing_annotations/val_segmentations'])
def test_each_missing_folder_of_the_layout_is_named(tmp_path, missing):
    """A root that lacks one folder of the official layout is refused, naming that folder;
    a check of one split needs only that split's folders."""
    for folder in ('TrainVal_images/train_images', 'TrainVal_images/val_images',
                   'TrainVal_parsing_annotations/train_segmentations',
                   'TrainVal_parsing_annotations/val_segmentations'):
        if folder != missing:
            (tmp_path / folder).mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as info:
        check_lip_root(str(tmp_path))
    assert str(info.value).startswith(f"LIP data not found: '{tmp_path / missing}' does not "
                                      'exist. Put the LIP dataset there in the official layout '
                                      '(see docs/en/user_guides/data.md)')
    other = 'val' if '/train_' in missing else 'train'
    check_lip_root(str(tmp_path), split=other)
