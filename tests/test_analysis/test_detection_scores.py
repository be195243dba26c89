"""Fresh detectors' scores spread like a trained one's (vt_mm/analysis/detection_scores.py):
exactly ``count`` dense pairs above the threshold; for two-stage detectors a threshold in a gap
between the scores ranked about ``count``."""
import pytest
import torch
from helpers.export import small_config, trained_like_bn

from vt_mm.analysis import build_model
from vt_mm.analysis.detection_scores import spread_scores
from vt_mm.models.wrappers import unscaled_det_samples


def _model(name, tmp_path):
    torch.manual_seed(0)
    model, _, _ = build_model(small_config(name, tmp_path))
    return trained_like_bn(model, affine=False).eval()


def _image():
    return torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))


def _dense_logits(model, x):
    """Every (anchor, class) logit of a dense head, flattened."""
    with torch.no_grad():
        return torch.cat([c.flatten() for c in model.bbox_head(model.extract_feat(x))[0]])


def _rcnn_outputs(model, x):
    """A two-stage detector's RPN objectness (flattened) and RoI class logits on its proposals."""
    from mmdet.structures.bbox import bbox2roi
    with torch.no_grad():
        feats = model.extract_feat(x)
        objectness = torch.cat([c.flatten() for c in model.rpn_head(feats)[0]])
        proposals = model.rpn_head.predict(feats, unscaled_det_samples(x), rescale=False)
        rois = bbox2roi([proposals[0].bboxes])
        return objectness, model.roi_head._bbox_forward(feats, rois)['cls_score']


@pytest.mark.parametrize('count', [9, 10, 25])
def test_dense_heads_get_exactly_count_pairs_above_the_threshold(count, tmp_path):
    model, x = _model('retinanet_vtfpn_small', tmp_path), _image()
    head = model.bbox_head
    before = _dense_logits(model, x).sigmoid()
    assert int((before > head.test_cfg.score_thr).sum()) == 0  # fresh: nothing detected
    spread_scores(model, x, count)
    scores = _dense_logits(model, x).sigmoid()
    assert int((scores > head.test_cfg.score_thr).sum()) == count
    # the threshold lies between two scores, not on one
    assert float((scores - head.test_cfg.score_thr).abs().min()) > 1e-4


def test_two_stage_heads_get_about_count_pairs_above_the_threshold(tmp_path):
    model, x = _model('faster_rcnn_vtfpn_small', tmp_path), _image()
    objectness = model.rpn_head.rpn_cls.weight.clone()
    spread_scores(model, x, 40)
    assert not torch.equal(objectness, model.rpn_head.rpn_cls.weight)  # the RPN spread too
    threshold = model.roi_head.test_cfg.score_thr
    scores = _rcnn_outputs(model, x)[1].softmax(-1)[:, :-1]
    assert 35 <= int((scores > threshold).sum()) <= 46
    assert float((scores - threshold).abs().min()) > 1e-6
    assert len(model.predict(x, unscaled_det_samples(x))[0].pred_instances) > 5


def test_dense_spreading_at_its_default_count_gives_unit_spread_logits(tmp_path):
    """40 pairs by default; the classifier scaled so that the logits have unit spread (the
    fresh bias is one prior for every class, so the spread is the weights')."""
    model, x = _model('retinanet_vtfpn_small', tmp_path), _image()
    head = model.bbox_head
    spread_scores(model, x)
    logits = _dense_logits(model, x)
    assert int((logits.sigmoid() > head.test_cfg.score_thr).sum()) == 40
    assert abs(float(logits.std()) - 1.0) < 1e-3


def test_dense_spreading_reads_conv_cls_where_the_head_has_no_retina_cls():
    """Heads named like FCOS's and ATSS's (``conv_cls``)."""
    from mmengine.config import ConfigDict

    class Head(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.conv_cls = torch.nn.Conv2d(4, 3, 1)
            self.test_cfg = ConfigDict(score_thr=0.05)

        def forward(self, feats):
            return [self.conv_cls(f) for f in feats], None

    class Detector(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.bbox_head = Head()

        def extract_feat(self, x):
            return [x, x[..., ::2, ::2]]

    torch.manual_seed(0)
    model, x = Detector(), torch.randn(1, 4, 8, 8)
    spread_scores(model, x, 7)
    scores = _dense_logits(model, x)
    assert int((scores.sigmoid() > 0.05).sum()) == 7


@pytest.mark.parametrize('count', [20, None])
def test_two_stage_threshold_is_midway_in_the_widest_gap_near_count(count, tmp_path):
    """RPN objectness spread to std 2, RoI logits to std 3; then, of the class scores ranked
    count-5 .. count+5 (best first), the threshold is the midpoint of the widest gap between
    neighbours (40 by default)."""
    model, x = _model('faster_rcnn_vtfpn_small', tmp_path), _image()
    if count is None:
        spread_scores(model, x)
        count = 40
    else:
        spread_scores(model, x, count)
    threshold = model.roi_head.test_cfg.score_thr
    objectness, logits = _rcnn_outputs(model, x)
    assert abs(float(objectness.std()) - 2.0) < 1e-3 and abs(float(logits.std()) - 3.0) < 1e-3
    ranked = logits.softmax(-1)[:, :-1].flatten().sort(descending=True).values
    above = int((ranked > threshold).sum())
    assert count - 4 <= above <= count + 5
    assert threshold == pytest.approx(float(ranked[above - 1] + ranked[above]) / 2, abs=0)
    window = ranked[count - 5:count + 6]
    gaps = window[:-1] - window[1:]
    assert float(ranked[above - 1] - ranked[above]) == float(gaps.max())
