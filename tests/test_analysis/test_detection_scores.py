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


@pytest.mark.parametrize('count', [9, 10, 25])
def test_dense_heads_get_exactly_count_pairs_above_the_threshold(count, tmp_path):
    model, x = _model('retinanet_vtfpn_small', tmp_path), _image()
    head = model.bbox_head
    with torch.no_grad():
        before = torch.cat([c.flatten() for c in head(model.extract_feat(x))[0]]).sigmoid()
        assert int((before > head.test_cfg.score_thr).sum()) == 0  # fresh: nothing detected
        spread_scores(model, x, count)
        scores = torch.cat([c.flatten() for c in head(model.extract_feat(x))[0]]).sigmoid()
    assert int((scores > head.test_cfg.score_thr).sum()) == count
    # the threshold lies between two scores, not on one
    assert float((scores - head.test_cfg.score_thr).abs().min()) > 1e-4


def test_two_stage_heads_get_about_count_pairs_above_the_threshold(tmp_path):
    from mmdet.structures.bbox import bbox2roi
    model, x = _model('faster_rcnn_vtfpn_small', tmp_path), _image()
    objectness = model.rpn_head.rpn_cls.weight.clone()
    spread_scores(model, x, 40)
    assert not torch.equal(objectness, model.rpn_head.rpn_cls.weight)  # the RPN spread too
    threshold = model.roi_head.test_cfg.score_thr
    with torch.no_grad():
        feats = model.extract_feat(x)
        proposals = model.rpn_head.predict(feats, unscaled_det_samples(x), rescale=False)
        rois = bbox2roi([proposals[0].bboxes])
        scores = model.roi_head._bbox_forward(feats, rois)['cls_score'].softmax(-1)[:, :-1]
    assert 35 <= int((scores > threshold).sum()) <= 46
    assert float((scores - threshold).abs().min()) > 1e-6
    assert len(model.predict(x, unscaled_det_samples(x))[0].pred_instances) > 5
