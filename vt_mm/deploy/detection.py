"""Detectors from the normalised image to final detections, in one graph every runtime runs.

mmdet's own post-processing (``BaseDenseHead.predict_by_feat``) filters with data-dependent
shapes and Python loops; :class:`DetectionOutputs` writes the same steps with operators the
runtimes have (TopK, Gather, ONNX ``NonMaxSuppression`` through ``torchvision.ops.nms``) and
pads the result to a fixed count:

* ``dets`` (1, K, 5): x1, y1, x2, y2 in input pixels, then the score; rows past ``num_dets``
  are zero;
* ``labels`` (1, K) int64: class ids (0 past ``num_dets``);
* ``num_dets`` (1,) int64: how many rows are detections.

The steps and mmdet's (``_predict_by_feat_single`` and ``_bbox_post_process`` of mmdet 3.3):

1. per level, the scores of every (anchor, class) pair; the ``nms_pre`` highest (TopK over the
   flattened pairs: the same pairs as mmdet's "above ``score_thr``, then the ``nms_pre``
   highest", as the highest pairs above a threshold are the highest pairs that are above it);
2. the selected anchors' boxes decoded by the head's own ``bbox_coder`` (clipped to the input);
3. pairs at or below ``score_thr``, and boxes not wider and taller than ``min_bbox_size``, get
   score 0: in greedy NMS a box only suppresses lower-scored ones, so these can suppress nothing
   that mmdet keeps, and they are counted out after NMS instead of being removed before it (no
   data-dependent shape before NMS);
4. per-class NMS as mmcv's ``batched_nms`` does it (boxes offset by class so that classes never
   overlap, one NMS), sorted by score, the first ``max_per_img`` kept.

Boxes are in the graph's input pixels: mmdet's ``rescale=True`` divides them by the resize
factor of its test pipeline, which an app applies itself (see the deployment guide).
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

__all__ = ['DetectionOutputs', 'DETECTION_OUTPUTS', 'unsupported', 'detections_of',
           'match_detections',
           'MIN_IOU', 'SCORE_ATOL']

DETECTION_OUTPUTS = ('dets', 'labels', 'num_dets')
# two detection results are the same when every detection of one has one of the other of its
# class with at least this IoU and a score within SCORE_ATOL, and there are no others
MIN_IOU = 0.99
SCORE_ATOL = 1e-3


def _scores_of(head, cls_score: torch.Tensor) -> torch.Tensor:
    """(A*C, H, W) class logits of one image and level -> (H*W*A, C) scores, mmdet's order."""
    logits = cls_score.permute(1, 2, 0).reshape(-1, head.cls_out_channels)
    if head.use_sigmoid_cls:
        return logits.sigmoid()
    return logits.softmax(-1)[:, :-1]  # the last class is the background


def unsupported(detector: nn.Module) -> Optional[str]:
    """Why :class:`DetectionOutputs` cannot take ``detector``, or None where it can."""
    head = getattr(detector, 'bbox_head', None)
    if head is None or getattr(detector, 'with_rpn', False):
        return (f'{type(detector).__name__}: the detections graph takes single-stage detectors '
                '(a bbox_head, no RPN); export this one\'s backbone + neck with '
                "output='logits'")
    for needed in ('bbox_coder', 'prior_generator', 'test_cfg'):
        if getattr(head, needed, None) is None:
            return (f'{type(head).__name__} has no {needed}: the detections graph takes '
                    'anchor-based dense heads (RetinaNet-like)')
    return None


def _decode(coder, priors: torch.Tensor, deltas: torch.Tensor, max_shape) -> torch.Tensor:
    """The coder's ``decode`` for one image. mmdet's DeltaXYWHBBoxCoder switches to a batched
    ONNX variant while exporting whose helper module mmdet 3 no longer has
    (``mmdet.core.export``); its single-image function is traceable and is called instead."""
    from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
    from mmdet.models.task_modules.coders.delta_xywh_bbox_coder import delta2bbox
    from mmdet.structures.bbox import get_box_tensor
    if type(coder) is DeltaXYWHBBoxCoder:
        return delta2bbox(priors, deltas, coder.means, coder.stds, max_shape,
                          clip_border=coder.clip_border, add_ctr_clamp=coder.add_ctr_clamp,
                          ctr_clamp=coder.ctr_clamp)
    return get_box_tensor(coder.decode(priors, deltas, max_shape=max_shape))


class DetectionOutputs(nn.Module):
    """An mmdet single-stage detector (anchor-based dense head: RetinaNet and its kin) from the
    normalised image (1, 3, H, W) to padded final detections (see the module docstring).

    Args:
        detector: an mmdet ``SingleStageDetector`` whose ``bbox_head`` has a ``bbox_coder`` and
            a ``prior_generator`` (RetinaNet, SSD-like heads).

    Example:
        >>> import torch
        >>> from vt_mm.analysis import build_model
        >>> detector, _, _ = build_model('vt_mm::vtfpn/retinanet_r50_vtfpn_1x_coco.py')
        >>> net = DetectionOutputs(detector.eval()).eval()
        >>> dets, labels, num_dets = net(torch.randn(1, 3, 128, 160))  # a normalised image
        >>> dets.shape, labels.shape, num_dets.shape
        (torch.Size([1, 100, 5]), torch.Size([1, 100]), torch.Size([1]))
        >>> boxes = dets[0, :int(num_dets[0]), :4]  # x1, y1, x2, y2 in input pixels
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        reason = unsupported(detector)
        if reason:
            raise TypeError(reason)
        head = detector.bbox_head
        cfg = head.test_cfg
        if cfg.get('nms', None) is None or cfg.nms.get('type', 'nms') != 'nms':
            raise ValueError(f"test_cfg.nms = {cfg.get('nms', None)}: the graph does mmcv's "
                             "plain per-class NMS only (type='nms')")
        self.detector = detector
        self.nms_pre = int(cfg.get('nms_pre', -1))
        self.score_thr = float(cfg.get('score_thr', 0.0))
        self.min_bbox_size = float(cfg.get('min_bbox_size', -1))
        self.iou_threshold = float(cfg.nms.iou_threshold)
        self.max_per_img = int(cfg.max_per_img)
        self.train(detector.training)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.shape[0] != 1:
            raise ValueError(f'DetectionOutputs takes one image (batch 1), got {x.shape[0]}')
        import torchvision
        head = self.detector.bbox_head
        cls_scores, bbox_preds = head(self.detector.extract_feat(x))
        priors = head.prior_generator.grid_priors([c.shape[-2:] for c in cls_scores],
                                                  dtype=x.dtype, device=x.device)
        num_classes = head.cls_out_channels - (0 if head.use_sigmoid_cls else 1)
        level_scores, level_labels, level_deltas, level_priors = [], [], [], []
        for cls_score, bbox_pred, level_priors_all in zip(cls_scores, bbox_preds, priors):
            scores = _scores_of(head, cls_score[0]).reshape(-1)
            deltas = bbox_pred[0].permute(1, 2, 0).reshape(-1, head.bbox_coder.encode_size)
            k = scores.shape[0] if self.nms_pre <= 0 else min(self.nms_pre, scores.shape[0])
            scores, pairs = scores.topk(k)
            # the pairs are non-negative: truncation is the floor, one integer Div in ONNX
            anchors = torch.div(pairs, num_classes, rounding_mode='trunc')
            level_scores.append(scores)
            level_labels.append(pairs - anchors * num_classes)
            level_deltas.append(deltas[anchors])
            level_priors.append(level_priors_all[anchors])
        scores = torch.cat(level_scores)
        labels = torch.cat(level_labels)
        boxes = _decode(head.bbox_coder, torch.cat(level_priors), torch.cat(level_deltas),
                        tuple(x.shape[2:]))
        valid = scores > self.score_thr
        if self.min_bbox_size >= 0:
            valid = valid & ((boxes[:, 2] - boxes[:, 0]) > self.min_bbox_size) & (
                (boxes[:, 3] - boxes[:, 1]) > self.min_bbox_size)
        scores = torch.where(valid, scores, torch.zeros_like(scores))
        # mmcv's batched_nms: offset each class beyond the others' boxes, one NMS
        offsets = labels.to(boxes.dtype) * (boxes.max() + 1)
        keep = torchvision.ops.nms(boxes + offsets[:, None], scores, self.iou_threshold)
        keep = keep[:self.max_per_img]
        num_dets = valid[keep].sum().reshape(1)
        dets = torch.cat([boxes[keep], scores[keep, None]], dim=1)
        # padded to max_per_img rows; the rows past num_dets are zero
        dets = torch.cat([dets, dets.new_zeros(self.max_per_img, 5)])[:self.max_per_img]
        labels = torch.cat([labels[keep], labels.new_zeros(self.max_per_img)])[:self.max_per_img]
        rows = torch.arange(self.max_per_img, device=x.device) < num_dets
        dets = dets * rows[:, None].to(dets.dtype)
        labels = labels * rows.to(labels.dtype)
        return dets[None], labels[None], num_dets


def detections_of(outputs: Sequence) -> Tuple:
    """``(boxes, scores, labels)`` of :class:`DetectionOutputs`'s outputs ``(dets, labels,
    num_dets)`` (tensors or arrays, batch 1), cut at ``num_dets``."""
    dets, labels, num_dets = (torch.as_tensor(np.asarray(o)) for o in outputs)
    n = int(num_dets.reshape(-1)[0])
    dets = dets.reshape(-1, 5)
    return dets[:n, :4], dets[:n, 4], labels.reshape(-1)[:n].long()


def match_detections(got: Tuple, expected: Tuple, min_iou: float = MIN_IOU,
                     score_atol: float = SCORE_ATOL) -> Tuple[bool, str]:
    """Whether two detection results are the same: every expected detection has one of its
    class with IoU >= ``min_iou`` and a score within ``score_atol``, and there are no others.

    Args:
        got, expected: ``(boxes (N, 4), scores (N,), labels (N,))`` each (arrays or tensors;
            :class:`DetectionOutputs`'s padded outputs cut at ``num_dets``, or mmdet's
            ``pred_instances``).
        min_iou: the IoU a matching box must reach.
        score_atol: the largest score difference of a match.

    Returns:
        (ok, message): the message names the first detection without a match.
    """
    boxes_g, scores_g, labels_g = (torch.as_tensor(t) for t in got)
    boxes_e, scores_e, labels_e = (torch.as_tensor(t) for t in expected)
    if len(boxes_g) != len(boxes_e):
        return False, f'{len(boxes_g)} detections, expected {len(boxes_e)}'
    used = torch.zeros(len(boxes_g), dtype=torch.bool)
    import torchvision
    iou = torchvision.ops.box_iou(boxes_e.double(), boxes_g.double()) if len(boxes_g) else None
    for i in range(len(boxes_e)):
        candidates = ((labels_g == labels_e[i]) & ~used & (iou[i] >= min_iou) &
                      ((scores_g.double() - float(scores_e[i])).abs() <= score_atol))
        if not bool(candidates.any()):
            return False, (f'expected detection {i} (class {int(labels_e[i])}, score '
                           f'{float(scores_e[i]):.4f}, box {boxes_e[i].tolist()}) has no match')
        best = int(torch.where(candidates, iou[i], torch.full_like(iou[i], -1)).argmax())
        used[best] = True
    return True, f'{len(boxes_e)} detections match'
