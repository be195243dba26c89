"""A generated segmentation task where a pixel's class depends on a cue far away in the image.

Each image holds one small coloured *cue* square in a random corner and two to four grey
shapes (discs and squares) elsewhere, at least ``min_dist`` pixels from the cue. A shape's class
is (shape kind, cue colour): the shape itself carries no colour, so labelling its pixels needs
the cue from the other side of the image. Local features (3x3 convolutions) cannot solve it;
context that spans the image (a deep receptive field, or visual tokens) can. It is the second
task of ``benchmarks/training_parity.py``.

Layout (mmseg ``BaseSegDataset`` with ``img_dir``/``ann_dir``)::

    <root>/img_dir/{train,val}/<id>.png
    <root>/ann_dir/{train,val}/<id>.png    (uint8 class ids, see CUE_CLASSES)
"""
import os
import os.path as osp
from typing import Dict, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ._stamp import is_current, write_stamp

CUE_COLOURS = (('red', (220, 40, 40)), ('green', (40, 200, 60)), ('blue', (40, 80, 230)),
               ('yellow', (230, 210, 40)))
SHAPE_KINDS = ('disc', 'square')
CUE_CLASSES = ('background', 'cue') + tuple(
    f'{kind}-{colour}' for colour, _ in CUE_COLOURS for kind in SHAPE_KINDS)


def cue_class(kind: int, colour: int) -> int:
    """Class id of a shape of ``SHAPE_KINDS[kind]`` in an image whose cue is ``colour``."""
    return 2 + colour * len(SHAPE_KINDS) + kind


def make_cue_sample(size: int, rng: np.random.Generator,
                    min_dist: float = 0.45) -> Tuple[np.ndarray, np.ndarray]:
    """One (image HxWx3 uint8, label HxW uint8) pair; ``min_dist`` is a fraction of ``size``."""
    base = rng.integers(70, 150, 3)
    # 45..174: inside uint8 (every value drawn below stays in 32..242, so nothing is clipped)
    image = Image.fromarray((base + rng.integers(-25, 26, (size, size, 3))).astype(np.uint8))
    label = Image.new('L', (size, size))  # zeros: the background class
    draw_img, draw_lbl = ImageDraw.Draw(image), ImageDraw.Draw(label)

    colour = int(rng.integers(len(CUE_COLOURS)))
    cue = max(4, size // 10)
    corner = int(rng.integers(4))
    margin = int(rng.integers(1, max(2, size // 16)))
    x0 = margin if corner % 2 == 0 else size - margin - cue
    y0 = margin if corner < 2 else size - margin - cue
    draw_img.rectangle((x0, y0, x0 + cue - 1, y0 + cue - 1), fill=CUE_COLOURS[colour][1])
    draw_lbl.rectangle((x0, y0, x0 + cue - 1, y0 + cue - 1), fill=1)
    cue_centre = np.array([x0 + cue / 2, y0 + cue / 2])

    wanted, placed = int(rng.integers(2, 5)), 0
    for _ in range(200):
        if placed == wanted:
            break
        r = rng.uniform(0.07, 0.13) * size
        centre = rng.uniform(r, size - r, 2)
        if np.linalg.norm(centre - cue_centre) < min_dist * size:
            continue
        kind = int(rng.integers(len(SHAPE_KINDS)))
        grey = int(rng.integers(150, 235))
        box = (centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r)
        for draw, fill in ((draw_img, (grey, grey, grey)), (draw_lbl, cue_class(kind, colour))):
            (draw.ellipse if kind == 0 else draw.rectangle)(box, fill=fill)
        placed += 1
    noisy = np.asarray(image) + rng.integers(-8, 9, (size, size, 3))  # int64: no wrap-around
    return noisy.astype(np.uint8), np.asarray(label)


def make_cue_seg(root: str,
                 num_train: int = 300,
                 num_val: int = 60,
                 size: int = 128,
                 seed: int = 0,
                 overwrite: bool = False) -> Dict[str, int]:
    """Writes the cue dataset to ``root``; returns the split sizes.

    Deterministic: the same arguments give byte-identical files. Existing complete data with the
    same arguments is kept unless ``overwrite``.
    """
    signature = f'{num_train},{num_val},{size},{seed}'
    if is_current(root, '.demo_cue', signature, overwrite):
        return dict(train=num_train, val=num_val)
    for split, count, split_seed in (('train', num_train, seed), ('val', num_val, seed + 7919)):
        img_dir, ann_dir = osp.join(root, 'img_dir', split), osp.join(root, 'ann_dir', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        rng = np.random.default_rng(split_seed)
        for i in range(count):
            img, lbl = make_cue_sample(size, rng)
            Image.fromarray(img).save(osp.join(img_dir, f'{i:05d}.png'))
            Image.fromarray(lbl).save(osp.join(ann_dir, f'{i:05d}.png'))
    write_stamp(root, '.demo_cue', signature)
    return dict(train=num_train, val=num_val)
