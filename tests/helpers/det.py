"""Shared by the detector tests: a batch from the generated COCO data, and one loss step (the
scores of fresh detectors spread like a trained one's: vt_mm.analysis.detection_scores)."""
import torch
from mmengine.dataset import pseudo_collate

from vt_mm.datasets.demo_shapes import SHAPE_CLASSES


def coco_batch(coco_root: str, with_mask: bool, size=(160, 128)) -> dict:
    """The first two images of ``make_demo_coco(root, 'train')`` through mmdet's pipeline."""
    from mmdet.registry import DATASETS
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
        dict(type='Resize', scale=size, keep_ratio=True),
        dict(type='PackDetInputs'),
    ]
    dataset = DATASETS.build(dict(type='CocoDataset', data_root=coco_root,
                                  ann_file='annotations/instances_train.json',
                                  data_prefix=dict(img='train/'),
                                  metainfo=dict(classes=SHAPE_CLASSES), pipeline=pipeline))
    return pseudo_collate([dataset[0], dataset[1]])


def loss_step(model, batch) -> dict:
    """Training-mode forward and backward; checks the summed loss is finite; returns the losses."""
    model.train()
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    return losses
