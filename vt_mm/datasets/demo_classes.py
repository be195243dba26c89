"""A generated image classification task that stands in for ImageNet when pretraining a backbone.

Each image shows one object, a *shape* filled with a *texture*, on a cluttered background; the
class is the pair (shape, texture): ``len(SHAPES) * len(TEXTURES)`` = 100 classes. Everything
else is drawn at random per image, so that no shortcut gives the class away: the object's
position, size (35-75% of the side), rotation and aspect, the texture's two colours, period,
orientation and phase, the background's colour, grain and clutter (thin lines and small
blobs in random colours, which can cross the object). Telling the classes apart needs what
ImageNet pretraining gives a backbone: oriented edges and periodic patterns at several scales
(the texture) and the outline of a region (the shape), invariant to colour, position and
rotation.

It is written for ``benchmarks/pretrain_backbone.py`` and shares no code with the
segmentation and detection tasks that backbone is then evaluated on
(``demo_lip.py``, ``demo_cue.py``, ``demo_shapes.py``): pretraining on their generators would
leak the downstream tasks into the "ImageNet" weights.

Layout (mmpretrain ``CustomDataset`` with an annotation file, as ImageNet's)::

    <root>/train/<class>/<id>.png, <root>/val/<class>/<id>.png
    <root>/meta/train.txt, <root>/meta/val.txt     ("<class>/<id>.png <label>" per line)
    <root>/meta/classes.txt                         (one class name per line, label order)
"""
import os
import os.path as osp
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ._stamp import is_current, write_stamp

SHAPES = ('disc', 'ellipse', 'triangle', 'square', 'pentagon', 'hexagon', 'star', 'cross',
          'crescent', 'ring')
TEXTURES = ('solid', 'stripes', 'checker', 'dots', 'concentric', 'sectors', 'grain', 'gradient',
            'zigzag', 'grid')
CLASSES = tuple(f'{s}-{t}' for s in SHAPES for t in TEXTURES)
# the smallest image side the generator draws: the background blobs' radius is drawn from
# [1.5, 0.08 * size) pixels, an empty range below 19
MIN_SIZE = 19


def _polygon(kind: str, centre, radius: float, angle: float, aspect: float) -> List[tuple]:
    """Vertices of a regular outline (unit radius, rotated, squeezed along one axis)."""
    if kind in ('disc', 'ellipse', 'ring', 'crescent'):
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        r = 1.0
    elif kind == 'star':
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    elif kind == 'cross':
        a = 0.34  # half the arm width
        xy = np.array([(a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1), (-a, -1), (-a, -a),
                       (-1, -a), (-1, a), (-a, a), (-a, 1)])
        t, r = np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1]) / np.sqrt(1 + a * a)
    else:
        n = dict(triangle=3, square=4, pentagon=5, hexagon=6)[kind]
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        r = 1.0
    x, y = r * np.cos(t), r * np.sin(t) * aspect
    c, s = np.cos(angle), np.sin(angle)
    return [(centre[0] + radius * (c * xi - s * yi), centre[1] + radius * (s * xi + c * yi))
            for xi, yi in zip(x, y)]


def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> Tuple[np.ndarray, tuple]:
    radius = rng.uniform(0.35, 0.75) * size / 2
    centre = rng.uniform(radius * 0.8, size - radius * 0.8, 2)
    angle = rng.uniform(0, 2 * np.pi)
    aspect = rng.uniform(0.42, 0.6) if kind == 'ellipse' else rng.uniform(0.85, 1.0)
    mask = Image.new('L', (size, size))  # zeros
    draw = ImageDraw.Draw(mask)
    draw.polygon(_polygon(kind, centre, radius, angle, aspect), fill=255)
    if kind == 'ring':  # an annulus: the inner 45-60% cut out
        draw.polygon(_polygon(kind, centre, radius * rng.uniform(0.45, 0.6), angle, aspect), fill=0)
    elif kind == 'crescent':  # a disc with an offset disc cut out
        shift = radius * rng.uniform(0.45, 0.65)
        inner = (centre[0] + shift * np.cos(angle), centre[1] + shift * np.sin(angle))
        draw.polygon(_polygon('disc', inner, radius * 0.9, angle, aspect), fill=0)
    return np.asarray(mask) > 127, (centre, radius)


def _texture(kind: str, size: int, centre, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A pattern in [0, 1] over the whole image (HxW float32)."""
    return _pattern(kind, size, centre, radius, rng).astype(np.float32)


def _pattern(kind: str, size: int, centre, radius: float, rng: np.random.Generator) -> np.ndarray:
    """The texture as a boolean or [0, 1] map (``_texture`` gives it one dtype)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = (xx - centre[0]) * np.cos(theta) + (yy - centre[1]) * np.sin(theta)
    v = -(xx - centre[0]) * np.sin(theta) + (yy - centre[1]) * np.cos(theta)
    period = rng.uniform(4.5, 9.0)
    phase = rng.uniform(0, 1)
    if kind == 'solid':
        return np.zeros((size, size), bool)
    if kind == 'stripes':
        return (u / period + phase) % 1 < 0.5
    if kind == 'checker':
        return ((np.floor(u / period + phase) + np.floor(v / period + phase)) % 2) > 0
    if kind == 'dots':
        du, dv = (u / period + phase) % 1 - 0.5, (v / period + phase) % 1 - 0.5
        return du * du + dv * dv < 0.09
    if kind == 'concentric':
        return (np.hypot(u, v) / period + phase) % 1 < 0.5
    if kind == 'sectors':
        n = int(rng.integers(4, 8))
        return ((np.arctan2(v, u) + np.pi) * n / (2 * np.pi) + phase) % 1 < 0.5
    if kind == 'grain':  # salt-and-pepper at one or two pixels
        cell = int(rng.integers(1, 3))
        small = rng.random((size // cell + 1, size // cell + 1)) < 0.5
        return np.kron(small, np.ones((cell, cell), bool))[:size, :size]
    if kind == 'gradient':  # one smooth ramp across the object
        return np.clip(0.5 + u / (2.2 * radius), 0, 1)
    if kind == 'zigzag':
        offset = np.abs((v / (1.5 * period)) % 1 - 0.5) * period
        return ((u + offset) / period + phase) % 1 < 0.5
    if kind == 'grid':  # thin lines on both axes
        return (((u / period + phase) % 1) < 0.22) | (((v / period + phase) % 1) < 0.22)
    raise ValueError(f'unknown texture {kind!r}; one of {TEXTURES}')


def _colours(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Two random colours at least 120 apart (L1), so that every texture stays visible."""
    while True:
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        if np.abs(a - b).sum() >= 120:
            return a.astype(np.float32), b.astype(np.float32)


def make_class_sample(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One HxWx3 uint8 image of class ``CLASSES[label]``."""
    shape, texture = SHAPES[label // len(TEXTURES)], TEXTURES[label % len(TEXTURES)]
    # background: a colour, grain, and clutter that is thinner or smaller than any object
    img = rng.integers(0, 256, 3).astype(np.float32) + rng.normal(0, 12, (size, size, 3))
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 7))):
        p = rng.uniform(0, size, 4)
        draw.line(tuple(p), fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=1)
    for _ in range(int(rng.integers(1, 5))):
        r = rng.uniform(1.5, 0.08 * size)
        x, y = rng.uniform(0, size, 2)
        draw.ellipse((x - r, y - r, x + r, y + r),
                     fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    img = np.asarray(canvas).astype(np.float32)

    mask, (centre, radius) = _shape_mask(shape, size, rng)
    t = _texture(texture, size, centre, radius, rng)[..., None]
    c1, c2 = _colours(rng)
    obj = c1 * (1 - t) + c2 * t + rng.normal(0, 6, (size, size, 3))
    img = np.where(mask[..., None], obj, img)

    # clutter in front of the object too: one or two thin lines
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, 3))):
        draw.line(tuple(rng.uniform(0, size, 4)),
                  fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=1)
    return np.asarray(canvas)


def make_demo_classes(root: str, train_per_class: int = 200, val_per_class: int = 20,
                      size: int = 64, seed: int = 0, overwrite: bool = False) -> str:
    """Writes the dataset under ``root`` (reused when written with the same arguments).

    Args:
        root: output folder.
        train_per_class / val_per_class: images per class in each split.
        size: image side in pixels.
        seed: the generator's seed; the splits use independent streams of it.
        overwrite: regenerate even when a complete dataset with these arguments exists.

    Returns:
        ``root``.
    """
    if train_per_class < 1 or val_per_class < 1:
        raise ValueError(f'train_per_class={train_per_class} and val_per_class={val_per_class} '
                         'must be >= 1')
    if size < MIN_SIZE:
        raise ValueError(f'size={size} is too small to draw the clutter and textures; use >= '
                         f'{MIN_SIZE}')
    signature = (f'demo_classes v1 train={train_per_class} val={val_per_class} size={size} '
                 f'seed={seed}')
    if is_current(root, '.complete', signature, overwrite):
        return root
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    with open(osp.join(root, 'meta', 'classes.txt'), 'w') as f:
        f.write('\n'.join(CLASSES) + '\n')
    for split, per_class, stream in (('train', train_per_class, 0), ('val', val_per_class, 1)):
        rng = np.random.default_rng([seed, stream])
        lines = []
        for label, name in enumerate(CLASSES):
            os.makedirs(osp.join(root, split, name), exist_ok=True)
            for i in range(per_class):
                rel = f'{name}/{i:05d}.png'
                Image.fromarray(make_class_sample(label, size, rng)).save(
                    osp.join(root, split, rel))
                lines.append(f'{rel} {label}')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    write_stamp(root, '.complete', signature)
    return root
