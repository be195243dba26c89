"""Fresh detectors with scores spread like a trained one's, for tests and latency benchmarks.

A freshly initialised RetinaNet-like head scores every (anchor, class) pair near its prior
(0.01, below ``score_thr``: nothing is detected, NMS has no work), a fresh RPN every anchor near
0.5 and a fresh RoI head every (proposal, class) pair near 1/81, within float rounding of each
other. These set the classifiers so that about ``count`` pairs pass the score threshold, with
the threshold midway between two scores, so that any two correct implementations keep the same
boxes and the post-processing does a trained model's work.
"""
import torch

from ..models.wrappers import unscaled_det_samples

__all__ = ['spread_dense_scores', 'spread_rcnn_scores', 'spread_scores']


def spread_scores(model, x, count: int = 40) -> None:
    """:func:`spread_rcnn_scores` for two-stage detectors, else :func:`spread_dense_scores`."""
    if getattr(model, 'with_rpn', False):
        spread_rcnn_scores(model, x, count)
    else:
        spread_dense_scores(model, x, count)


def spread_dense_scores(model, x, count: int) -> None:
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


def spread_rcnn_scores(model, x, count: int) -> None:
    """The two-stage counterpart of :func:`spread_dense_scores`: spreads a fresh RPN's
    objectness and RoI classifier's logits (fresh ones score every anchor near 0.5 and every
    (proposal, class) pair near 1/81, within float rounding of each other), then puts
    ``test_cfg.rcnn.score_thr`` in the widest gap between the scores ranked about ``count``."""
    from mmdet.structures.bbox import bbox2roi

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
