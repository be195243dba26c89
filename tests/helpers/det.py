"""Shared by the detector tests: a batch from the generated COCO data, and one loss step."""
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


def spread_detection_scores(model, x, count: int = 40) -> None:
    """Sets a fresh RetinaNet-like head's classifier so that about ``count`` (anchor, class)
    pairs of ``x`` score above the head's ``score_thr`` and the threshold lies midway between
    two logits: freshly initialised heads score every pair near the prior (0.01, below the
    threshold: nothing to compare), and scores within float rounding of each other or of the
    threshold would make any two correct implementations keep different boxes."""
    head = model.bbox_head
    classifier = getattr(head, 'retina_cls', None) or head.conv_cls
    with torch.no_grad():
        feats = model.extract_feat(x)
        logits = torch.cat([c.flatten() for c in head(feats)[0]])
        classifier.weight.mul_(1.0 / logits.std())
        classifier.bias.zero_()
        logits = torch.cat([c.flatten() for c in head(feats)[0]]).sort().values
        middle = (logits[-count - 1] + logits[-count]) / 2
        threshold = torch.logit(torch.tensor(float(head.test_cfg.score_thr)))
        classifier.bias.fill_(float(threshold - middle))


def spread_rcnn_scores(model, x, count: int = 40) -> None:
    """The two-stage counterpart of :func:`spread_detection_scores`: spreads a fresh RPN's
    objectness and RoI classifier's logits (fresh ones score every anchor near 0.5 and every
    (proposal, class) pair near 1/81, within float rounding of each other), then puts
    ``test_cfg.rcnn.score_thr`` in the widest gap between the scores ranked about ``count``."""
    from mmdet.structures.bbox import bbox2roi

    from vt_mm.models.wrappers import unscaled_det_samples
    roi_head = model.roi_head
    with torch.no_grad():
        feats = model.extract_feat(x)
        objectness = torch.cat([c.flatten() for c in model.rpn_head(feats)[0]])
        model.rpn_head.rpn_cls.weight.mul_(2.0 / objectness.std())
        proposals = model.rpn_head.predict(feats, unscaled_det_samples(x), rescale=False)
        rois = bbox2roi([proposals[0].bboxes])
        classifier = roi_head.bbox_head.fc_cls
        logits = roi_head._bbox_forward(feats, rois)['cls_score']
        classifier.weight.mul_(3.0 / logits.std())
        classifier.bias.zero_()
        scores = roi_head._bbox_forward(feats, rois)['cls_score'].softmax(-1)[:, :-1]
        ranked = scores.flatten().sort(descending=True).values[max(count - 5, 0):count + 6]
        widest = int((ranked[:-1] - ranked[1:]).argmax())
        roi_head.test_cfg.score_thr = float(ranked[widest] + ranked[widest + 1]) / 2
