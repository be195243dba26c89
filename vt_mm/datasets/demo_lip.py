"""A small, deterministic, synthetic dataset in the official LIP layout.

Each image shows one person-like figure drawn from the 20 LIP part classes on a textured
background. Figures face the viewer with their *left* parts (Left-arm, Left-leg, Left-shoe) on the
image's left side. Left and right parts share the same colour distribution, so only their
position relative to the figure tells them apart: a horizontal flip that does not swap the
left/right labels (14<->15, 16<->17, 18<->19) teaches the model contradictory labels.

The layout is the official one (see docs/en/user_guides/data.md):

    <root>/TrainVal_images/{train_images,val_images}/<id>.jpg
    <root>/TrainVal_images/{train_id.txt,val_id.txt}
    <root>/TrainVal_parsing_annotations/{train_segmentations,val_segmentations}/<id>.png
"""
import os
import os.path as osp
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ._stamp import is_current, write_stamp

LIP_CLASSES = ('Background', 'Hat', 'Hair', 'Glove', 'Sunglasses', 'UpperClothes', 'Dress', 'Coat',
               'Socks', 'Pants', 'Jumpsuits', 'Scarf', 'Skirt', 'Face', 'Left-arm', 'Right-arm',
               'Left-leg', 'Right-leg', 'Left-shoe', 'Right-shoe')
LIP_FLIP_PAIRS = ((14, 15), (16, 17), (18, 19))

# Base RGB colour per class. Left/right pairs share a colour on purpose.
_SKIN = (224, 172, 138)
_CLASS_COLOURS = {
    1: (200, 40, 40), 2: (60, 40, 20), 3: (240, 240, 240), 4: (10, 10, 10), 5: (40, 90, 200),
    6: (200, 60, 160), 7: (90, 110, 60), 8: (250, 250, 120), 9: (40, 40, 90), 10: (230, 130, 20),
    11: (160, 20, 60), 12: (120, 40, 150), 13: _SKIN, 14: _SKIN, 15: _SKIN, 16: _SKIN, 17: _SKIN,
    18: (90, 60, 40), 19: (90, 60, 40)
}


def _jitter(rng: np.random.Generator, colour, amount: int = 25) -> Tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


class _Canvas:
    """Draws the same shape into the RGB image and the label map."""

    def __init__(self, image: Image.Image, label: Image.Image, rng: np.random.Generator):
        self.img = ImageDraw.Draw(image)
        self.lbl = ImageDraw.Draw(label)
        self.rng = rng
        self.colours: Dict[int, Tuple[int, int, int]] = {}

    def colour(self, cls: int):
        # one colour per class per figure; left/right parts get the same draw
        key = {15: 14, 17: 16, 19: 18}.get(cls, cls)
        if key not in self.colours:
            self.colours[key] = _jitter(self.rng, _CLASS_COLOURS[cls])
        return self.colours[key]

    def polygon(self, cls, pts):
        self.img.polygon(pts, fill=self.colour(cls))
        self.lbl.polygon(pts, fill=cls)

    def ellipse(self, cls, box):
        self.img.ellipse(box, fill=self.colour(cls))
        self.lbl.ellipse(box, fill=cls)

    def rect(self, cls, box):
        self.img.rectangle(box, fill=self.colour(cls))
        self.lbl.rectangle(box, fill=cls)


def _limb(cx0, cy0, cx1, cy1, width):
    """A quadrilateral of the given width from (cx0, cy0) to (cx1, cy1)."""
    dx, dy = cx1 - cx0, cy1 - cy0
    norm = max((dx * dx + dy * dy)**0.5, 1e-6)
    ox, oy = -dy / norm * width / 2, dx / norm * width / 2
    return [(cx0 + ox, cy0 + oy), (cx1 + ox, cy1 + oy), (cx1 - ox, cy1 - oy), (cx0 - ox, cy0 - oy)]


def draw_figure(canvas: _Canvas, cx: float, top: float, height: float,
                rng: np.random.Generator) -> None:
    """Draws one figure whose head top is at (cx, top) and whose height is ``height`` pixels."""
    u = height / 8.0  # one "head" unit
    head_w, head_h = 0.8 * u, 1.0 * u
    neck_y = top + head_h
    shoulder_y = neck_y + 0.25 * u
    hip_y = shoulder_y + 2.8 * u
    foot_y = top + height
    torso_w = 1.9 * u
    hip_w = 1.6 * u
    limb_w = 0.45 * u
    leg_w = 0.6 * u
    spread = rng.uniform(0.0, 0.9) * u  # how far apart the feet are
    arm_out = rng.uniform(0.3, 1.6) * u  # how far the hands are from the body
    outfit = rng.choice(['shirt_pants', 'shirt_skirt', 'dress', 'jumpsuit', 'coat_pants'])

    # legs (drawn first, clothes go over them); left leg on the image's left
    lx, rx = cx - hip_w / 4, cx + hip_w / 4
    lfoot = (cx - hip_w / 4 - spread, foot_y - 0.3 * u)
    rfoot = (cx + hip_w / 4 + spread, foot_y - 0.3 * u)
    canvas.polygon(16, _limb(lx, hip_y, lfoot[0], lfoot[1], leg_w))
    canvas.polygon(17, _limb(rx, hip_y, rfoot[0], rfoot[1], leg_w))
    if rng.random() < 0.4:  # socks on the lower legs
        for fx in (lfoot[0], rfoot[0]):
            canvas.rect(8, (fx - leg_w / 2, foot_y - 1.0 * u, fx + leg_w / 2, foot_y - 0.35 * u))
    canvas.ellipse(18, (lfoot[0] - 0.55 * u, foot_y - 0.45 * u, lfoot[0] + 0.25 * u, foot_y))
    canvas.ellipse(19, (rfoot[0] - 0.25 * u, foot_y - 0.45 * u, rfoot[0] + 0.55 * u, foot_y))

    # arms; left arm on the image's left
    lhand = (cx - torso_w / 2 - arm_out, hip_y + rng.uniform(-0.8, 0.4) * u)
    rhand = (cx + torso_w / 2 + arm_out, hip_y + rng.uniform(-0.8, 0.4) * u)
    canvas.polygon(14, _limb(cx - torso_w / 2 + limb_w / 2, shoulder_y + limb_w / 2, lhand[0],
                             lhand[1], limb_w))
    canvas.polygon(15, _limb(cx + torso_w / 2 - limb_w / 2, shoulder_y + limb_w / 2, rhand[0],
                             rhand[1], limb_w))
    if rng.random() < 0.3:
        for hx, hy in (lhand, rhand):
            canvas.ellipse(3, (hx - 0.3 * u, hy - 0.3 * u, hx + 0.3 * u, hy + 0.3 * u))

    # clothes
    torso = [(cx - torso_w / 2, shoulder_y), (cx + torso_w / 2, shoulder_y),
             (cx + hip_w / 2, hip_y), (cx - hip_w / 2, hip_y)]
    thigh_y = hip_y + 1.6 * u
    if outfit in ('shirt_pants', 'coat_pants'):
        canvas.polygon(9, [(cx - hip_w / 2, hip_y), (cx + hip_w / 2, hip_y),
                           (rfoot[0] + leg_w / 2, foot_y - 1.1 * u), (cx, hip_y + 0.6 * u),
                           (lfoot[0] - leg_w / 2, foot_y - 1.1 * u)])
        canvas.polygon(5 if outfit == 'shirt_pants' else 7, torso)
    elif outfit == 'shirt_skirt':
        canvas.polygon(12, [(cx - hip_w / 2, hip_y), (cx + hip_w / 2, hip_y),
                            (cx + hip_w / 2 + 0.5 * u, thigh_y),
                            (cx - hip_w / 2 - 0.5 * u, thigh_y)])
        canvas.polygon(5, torso)
    elif outfit == 'dress':
        canvas.polygon(6, torso[:2] + [(cx + hip_w / 2 + 0.6 * u, thigh_y),
                                       (cx - hip_w / 2 - 0.6 * u, thigh_y)])
    else:  # jumpsuit: torso and legs down to the shins
        canvas.polygon(10, torso)
        canvas.polygon(10, [(cx - hip_w / 2, hip_y), (cx + hip_w / 2, hip_y),
                            (rfoot[0] + leg_w / 2, foot_y - 1.2 * u), (cx, hip_y + 0.6 * u),
                            (lfoot[0] - leg_w / 2, foot_y - 1.2 * u)])
    if rng.random() < 0.3:
        canvas.rect(11, (cx - 0.5 * u, neck_y - 0.05 * u, cx + 0.5 * u, shoulder_y + 0.35 * u))

    # head
    canvas.ellipse(2, (cx - head_w / 2 - 0.1 * u, top - 0.1 * u, cx + head_w / 2 + 0.1 * u,
                       top + 0.75 * head_h))
    canvas.ellipse(13, (cx - head_w / 2, top + 0.2 * head_h, cx + head_w / 2, top + head_h))
    if rng.random() < 0.3:
        canvas.polygon(1, [(cx - head_w / 2 - 0.2 * u, top + 0.15 * u), (cx + head_w / 2 + 0.2 * u,
                                                                         top + 0.15 * u),
                           (cx + head_w / 3, top - 0.4 * u), (cx - head_w / 3, top - 0.4 * u)])
    if rng.random() < 0.3:
        canvas.rect(4, (cx - head_w / 2 + 0.05 * u, top + 0.45 * head_h, cx + head_w / 2 - 0.05 * u,
                        top + 0.6 * head_h))


def make_sample(size: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One (image HxWx3 uint8, label HxW uint8) pair."""
    # textured background: a colour gradient plus noise
    c0, c1 = rng.integers(60, 200, 3), rng.integers(60, 200, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    bg = (c0 * (1 - t) + c1 * t).repeat(size, axis=1)
    image = Image.fromarray(bg.astype(np.uint8))  # 60..199: nothing to clip
    label = Image.new('L', (size, size))  # zeros: the background class
    canvas = _Canvas(image, label, rng)
    height = rng.uniform(0.6, 0.95) * size
    cx = rng.uniform(0.3, 0.7) * size
    top = rng.uniform(0.02, max(0.03, 0.98 - height / size)) * size
    draw_figure(canvas, cx, top, height, rng)
    img = np.asarray(image) + rng.integers(-12, 13, (size, size, 3))  # int64: no wrap-around
    # LIP's near-black and near-white class colours leave 0..255 with the noise: clip them
    return np.clip(img, 0, 255).astype(np.uint8), np.asarray(label)


def make_demo_lip(root: str,
                  num_train: int = 400,
                  num_val: int = 50,
                  size: int = 128,
                  seed: int = 0,
                  overwrite: bool = False) -> Dict[str, int]:
    """Writes the demo dataset to ``root`` in the LIP layout; returns the split sizes.

    Deterministic: the same arguments give byte-identical label maps and ids. Existing complete
    data with the same arguments is kept unless ``overwrite``.
    """
    signature = f'{num_train},{num_val},{size},{seed}'
    if is_current(root, '.demo_lip', signature, overwrite):
        return dict(train=num_train, val=num_val)
    splits = (('train', num_train, seed), ('val', num_val, seed + 1_000_003))
    for split, count, split_seed in splits:
        img_dir = osp.join(root, 'TrainVal_images', f'{split}_images')
        ann_dir = osp.join(root, 'TrainVal_parsing_annotations', f'{split}_segmentations')
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        rng = np.random.default_rng(split_seed)
        ids = []
        for i in range(count):
            img, lbl = make_sample(size, rng)
            stem = f'{i:05d}_{split}'
            Image.fromarray(img).save(osp.join(img_dir, stem + '.jpg'), quality=95)
            Image.fromarray(lbl).save(osp.join(ann_dir, stem + '.png'))
            ids.append(stem)
        with open(osp.join(root, 'TrainVal_images', f'{split}_id.txt'), 'w') as f:
            f.write('\n'.join(ids) + '\n')
    write_stamp(root, '.demo_lip', signature)
    return dict(train=num_train, val=num_val)


def check_lip_root(root: str, split: Optional[str] = None) -> None:
    """Raises FileNotFoundError naming the missing path and the demo-data tool."""
    splits = [split] if split else ['train', 'val']
    needed = [root]
    for s in splits:
        needed += [
            osp.join(root, 'TrainVal_images', f'{s}_images'),
            osp.join(root, 'TrainVal_parsing_annotations', f'{s}_segmentations')
        ]
    for path in needed:
        if not osp.isdir(path):
            raise FileNotFoundError(
                f'LIP data not found: {path!r} does not exist. Put the LIP dataset there in the '
                'official layout (see docs/en/user_guides/data.md), or write the synthetic demo '
                f'data with `python tools/dataset_converters/make_demo_lip.py --out {root}`.')
