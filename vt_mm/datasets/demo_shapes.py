"""Small, deterministic, synthetic datasets for detection and classification.

* :func:`make_demo_coco` writes a COCO-format instance dataset of coloured shapes (boxes and
  polygon masks), for mmdet detectors (RetinaNet, Mask R-CNN, Panoptic-FPN's instance part);
  :func:`coco_data_config` is the mmdet config text that trains and validates on it.
* :func:`make_demo_imagefolder` writes an ImageFolder-style classification dataset
  (``<root>/<split>/<class>/<n>.jpg``) for mmpretrain's ``CustomDataset``.
* :func:`make_demo_ade20k` writes a semantic-segmentation dataset in the ADE20K layout
  (``images/{training,validation}/*.jpg``, ``annotations/...png``; label 0 = "other", ignored by
  ``reduce_zero_label``) for mmseg's ``ADE20KDataset``.

Tests and the synthetic benchmarks use them; nothing is downloaded.
"""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ('square', 'circle', 'triangle')
_SHAPE_COLOURS = ((220, 60, 60), (60, 180, 60), (60, 90, 220))


def _shape_polygon(kind: str, cx: float, cy: float, r: float) -> List[Tuple[float, float]]:
    if kind == 'square':
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if kind == 'triangle':
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    return [(cx + r * math.cos(a), cy + r * math.sin(a))
            for a in np.linspace(0, 2 * math.pi, 24, endpoint=False)]


def _background(size: Tuple[int, int], rng: np.random.Generator) -> Image.Image:
    w, h = size
    base = rng.integers(90, 170, 3)
    noise = rng.integers(-20, 21, (h, w, 3))
    return Image.fromarray((base + noise).astype(np.uint8))  # 70..189: nothing to clip


def _draw_shapes(image: Image.Image, size: Tuple[int, int], max_objects: int,
                 radius: Tuple[float, float], rng: np.random.Generator,
                 label_image: Image.Image = None) -> List[Tuple[int, List[tuple]]]:
    """Draws 1..max_objects shapes of jittered class colours; returns (class, polygon) of
    each (and paints class + 1 into ``label_image``)."""
    w, h = size
    draw = ImageDraw.Draw(image)
    draw_label = ImageDraw.Draw(label_image) if label_image is not None else None
    drawn = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(len(SHAPE_CLASSES)))
        r = float(rng.uniform(*radius) * min(w, h))
        cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
        poly = _shape_polygon(SHAPE_CLASSES[label], cx, cy, r)
        # the class colours' channels are 60..220, so jittered 35..245: nothing to clip
        colour = tuple(int(c + rng.integers(-25, 26)) for c in _SHAPE_COLOURS[label])
        draw.polygon(poly, fill=colour)
        if draw_label is not None:
            draw_label.polygon(poly, fill=label + 1)
        drawn.append((label, poly))
    return drawn


def coco_sample(size: Tuple[int, int], max_objects: int,
                rng: np.random.Generator) -> Tuple[np.ndarray, List[dict]]:
    """One detection image (H x W x 3 uint8) and its COCO annotations (category, box, area,
    polygon; no ids)."""
    image = _background(size, rng)
    objects = []
    for label, poly in _draw_shapes(image, size, max_objects, (0.1, 0.22), rng):
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        objects.append(dict(category_id=label + 1, bbox=[x0, y0, x1 - x0, y1 - y0],
                            area=float((x1 - x0) * (y1 - y0)), iscrowd=0,
                            segmentation=[[c for p in poly for c in p]]))
    return np.asarray(image), objects


def make_demo_coco(root: str,
                   split: str = 'train',
                   num_images: int = 8,
                   size: Tuple[int, int] = (128, 96),
                   max_objects: int = 3,
                   seed: int = 0) -> Dict[str, str]:
    """Writes ``<root>/<split>/*.jpg`` and ``<root>/annotations/instances_<split>.json``.

    Args:
        size: (width, height) of every image.

    Returns:
        dict with the ``ann_file`` and ``img_dir`` paths relative to ``root``.
    """
    rng = np.random.default_rng(seed)
    img_dir = osp.join(root, split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    w, h = size
    images, annotations = [], []
    for i in range(num_images):
        pixels, objects = coco_sample(size, max_objects, rng)
        file_name = f'{i:06d}.jpg'
        for obj in objects:
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, **obj))
        Image.fromarray(pixels).save(osp.join(img_dir, file_name), quality=95)
        images.append(dict(id=i + 1, file_name=file_name, width=w, height=h))
    categories = [dict(id=k + 1, name=n) for k, n in enumerate(SHAPE_CLASSES)]
    ann_file = osp.join('annotations', f'instances_{split}.json')
    with open(osp.join(root, ann_file), 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return dict(ann_file=ann_file, img_dir=split + '/')


def coco_data_config(root: str,
                     scale: Tuple[int, int] = (160, 128),
                     batch_size: int = 4,
                     val_batch_size: int = 4,
                     mask: bool = False) -> str:
    """mmdet config lines for a :func:`make_demo_coco` dataset at ``root``.

    The data part of a config that inherits an mmdet detector config (metainfo, pipelines,
    dataloaders, COCO evaluators: ``bbox``, plus ``segm`` with ``mask``). The synthetic benchmark,
    the training-parity benchmark and the tool tests write it below their ``_base_`` line and add
    their own model and schedule.

    Args:
        root: the dataset root given to :func:`make_demo_coco`.
        scale: (width, height) images are resized to, keeping the aspect ratio.
        batch_size: training batch size.
        val_batch_size: validation and test batch size.
        mask: also load the instance masks and evaluate ``segm`` (Mask R-CNN).
    """
    metric = ['bbox', 'segm'] if mask else 'bbox'
    return f"""data_root = {root!r}
metainfo = dict(classes={SHAPE_CLASSES!r})
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask={mask}),
    dict(type='Resize', scale={scale!r}, keep_ratio=True), dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale={scale!r}, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask={mask}),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor'))]
train_dataloader = dict(batch_size={batch_size}, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, metainfo=metainfo,
                                     ann_file='annotations/instances_train.json',
                                     data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(batch_size={val_batch_size}, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, metainfo=metainfo,
                                   ann_file='annotations/instances_val.json',
                                   data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + '/annotations/instances_val.json', metric={metric!r})
test_evaluator = val_evaluator
"""


def make_demo_imagefolder(root: str,
                          split: str = 'train',
                          per_class: int = 4,
                          size: int = 64,
                          seed: int = 0) -> List[str]:
    """Writes ``<root>/<split>/<class>/<n>.jpg``: one centred shape per image; returns classes."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(SHAPE_CLASSES):
        d = osp.join(root, split, name)
        os.makedirs(d, exist_ok=True)
        for n in range(per_class):
            Image.fromarray(centred_shape(label, size, rng)).save(osp.join(d, f'{n:04d}.jpg'),
                                                                  quality=95)
    return list(SHAPE_CLASSES)


def centred_shape(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One classification image (size x size x 3 uint8): ``SHAPE_CLASSES[label]`` near the
    centre on a noisy background."""
    image = _background((size, size), rng)
    r = float(rng.uniform(0.2, 0.35) * size)
    c = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    ImageDraw.Draw(image).polygon(_shape_polygon(SHAPE_CLASSES[label], c[0], c[1], r),
                                  fill=_SHAPE_COLOURS[label])
    return np.asarray(image)


def make_demo_ade20k(root: str,
                     num_train: int = 8,
                     num_val: int = 2,
                     size: Tuple[int, int] = (96, 80),
                     max_objects: int = 3,
                     seed: int = 0) -> None:
    """Writes shapes on a textured background in the ADE20K directory layout.

    Pixel labels: 0 ("other", the background; ignored by ``reduce_zero_label=True``) and
    1-3 for square/circle/triangle, i.e. ADE20K classes 0-2 (wall, building, sky) after the
    reduction; select them with ``metainfo=dict(classes=("wall", "building", "sky"))``.

    Args:
        size: (width, height) of every image.
    """
    rng = np.random.default_rng(seed)
    for split, count in (('training', num_train), ('validation', num_val)):
        img_dir, ann_dir = osp.join(root, 'images', split), osp.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(count):
            image, label = ade20k_sample(size, max_objects, rng)
            name = f'ADE_{split[:5]}_{i:08d}'
            Image.fromarray(image).save(osp.join(img_dir, name + '.jpg'), quality=95)
            Image.fromarray(label).save(osp.join(ann_dir, name + '.png'))


def ade20k_sample(size: Tuple[int, int], max_objects: int,
                  rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One segmentation pair: image (H x W x 3 uint8) and labels (H x W uint8, 0 = other,
    k + 1 for ``SHAPE_CLASSES[k]``)."""
    image = _background(size, rng)
    label = Image.new('L', size)  # zeros: "other"
    _draw_shapes(image, size, max_objects, (0.15, 0.3), rng, label)
    return np.asarray(image), np.asarray(label)
