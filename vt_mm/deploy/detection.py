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

__all__ = ['DetectionOutputs', 'TwoStageDetectionOutputs', 'detections_graph', 'output_names',
           'DETECTION_OUTPUTS', 'unsupported', 'detections_of', 'match_detections', 'MIN_IOU',
           'SCORE_ATOL', 'MIN_MASK_AGREEMENT', 'paste_masks']

DETECTION_OUTPUTS = ('dets', 'labels', 'num_dets')
# two detection results are the same when every detection of one has one of the other of its
# class with at least this IoU and a score within SCORE_ATOL, and there are no others
MIN_IOU = 0.99
SCORE_ATOL = 1e-3
# ... and two matched masks agree on at least this share of their pixels
MIN_MASK_AGREEMENT = 0.99


def _scores_of(head, cls_score: torch.Tensor) -> torch.Tensor:
    """(A*C, H, W) class logits of one image and level -> (H*W*A, C) scores, mmdet's order."""
    logits = cls_score.permute(1, 2, 0).reshape(-1, head.cls_out_channels)
    if head.use_sigmoid_cls:
        return logits.sigmoid()
    return logits.softmax(-1)[:, :-1]  # the last class is the background


def unsupported(detector: nn.Module) -> Optional[str]:
    """Why :func:`detections_graph` cannot take ``detector``, or None where it can."""
    if getattr(detector, 'with_rpn', False):
        return _two_stage_unsupported(detector)
    head = getattr(detector, 'bbox_head', None)
    if head is None:
        return (f'{type(detector).__name__}: the detections graph takes single-stage detectors '
                '(a bbox_head) and two-stage ones (an RPN and a StandardRoIHead); export this '
                "one's backbone + neck with output='logits'")
    return _dense_head_unsupported(head)


def _dense_head_unsupported(head) -> Optional[str]:
    for needed in ('bbox_coder', 'prior_generator', 'test_cfg'):
        if getattr(head, needed, None) is None:
            return (f'{type(head).__name__} has no {needed}: the detections graph takes '
                    'anchor-based dense heads (RetinaNet-like, RPN)')
    return None


def _two_stage_unsupported(detector) -> Optional[str]:
    rpn_head = getattr(detector, 'rpn_head', None)
    reason = (_dense_head_unsupported(rpn_head) if rpn_head is not None else
              f'{type(detector).__name__} has no rpn_head')
    if reason:
        return reason
    from mmdet.models.roi_heads import StandardRoIHead
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    if getattr(detector, 'with_semantic_head', False):
        return (f'{type(detector).__name__}: the detections graph has no panoptic fusion '
                "(semantic head); export this one's backbone + neck with output='logits'")
    roi_head = getattr(detector, 'roi_head', None)
    if type(roi_head) is not StandardRoIHead:
        return (f'{type(roi_head).__name__}: the detections graph takes the StandardRoIHead '
                "(Faster / Mask R-CNN); export this one's backbone + neck with output='logits'")
    if roi_head.with_shared_head:
        return 'a RoI head with a shared head (C4 models): not in the detections graph'
    extractors = [roi_head.bbox_roi_extractor] + (
        [roi_head.mask_roi_extractor] if roi_head.with_mask else [])
    for extractor in extractors:
        if type(extractor) is not SingleRoIExtractor:
            return f'{type(extractor).__name__}: the detections graph takes SingleRoIExtractor'
        for layer in extractor.roi_layers:
            if type(layer).__name__ != 'RoIAlign' or layer.pool_mode != 'avg':
                return (f'RoI layer {type(layer).__name__} '
                        f"(pool_mode {getattr(layer, 'pool_mode', None)!r}): the detections "
                        "graph takes RoIAlign with pool_mode='avg' (ONNX RoiAlign)")
    if getattr(roi_head.bbox_head, 'custom_cls_channels', False):
        return 'a bbox head with custom class channels: not in the detections graph'
    return None


def _nms_settings(cfg, where: str) -> float:
    """The IoU threshold of ``cfg.nms``; other NMS kinds (soft-NMS) are refused."""
    if cfg.get('nms', None) is None or cfg.nms.get('type', 'nms') != 'nms':
        raise ValueError(f"{where}.nms = {cfg.get('nms', None)}: the graph does mmcv's plain "
                         "per-class NMS only (type='nms')")
    return float(cfg.nms.iou_threshold)


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


def _dense_candidates(head, feats, image_shape, nms_pre: int) -> Tuple:
    """A dense head's candidates, mmdet's ``_predict_by_feat_single`` up to the decoding:
    per level the ``nms_pre`` highest (anchor, class) pairs, their boxes decoded by the head's
    own coder. Returns ``(boxes, scores, labels, levels)`` (levels: the pyramid level of each)."""
    cls_scores, bbox_preds = head(feats)
    priors = head.prior_generator.grid_priors([c.shape[-2:] for c in cls_scores],
                                              dtype=feats[0].dtype, device=feats[0].device)
    num_classes = head.cls_out_channels - (0 if head.use_sigmoid_cls else 1)
    level_scores, level_labels, level_deltas, level_priors, levels = [], [], [], [], []
    for level, (cls_score, bbox_pred, level_priors_all) in enumerate(
            zip(cls_scores, bbox_preds, priors)):
        scores = _scores_of(head, cls_score[0]).reshape(-1)
        deltas = bbox_pred[0].permute(1, 2, 0).reshape(-1, head.bbox_coder.encode_size)
        k = scores.shape[0] if nms_pre <= 0 else min(nms_pre, scores.shape[0])
        scores, pairs = scores.topk(k)
        # the pairs are non-negative: truncation is the floor, one integer Div in ONNX
        anchors = torch.div(pairs, num_classes, rounding_mode='trunc')
        level_scores.append(scores)
        level_labels.append(pairs - anchors * num_classes)
        level_deltas.append(deltas[anchors])
        level_priors.append(level_priors_all[anchors])
        levels.append(torch.full_like(pairs, level))
    boxes = _decode(head.bbox_coder, torch.cat(level_priors), torch.cat(level_deltas),
                    image_shape)
    return boxes, torch.cat(level_scores), torch.cat(level_labels), torch.cat(levels)


def _big_enough(boxes: torch.Tensor, min_bbox_size: float) -> torch.Tensor:
    """mmdet's size filter: wider and taller than ``min_bbox_size`` (all, when it is < 0)."""
    if min_bbox_size < 0:
        return torch.ones_like(boxes[:, 0], dtype=torch.bool)
    return ((boxes[:, 2] - boxes[:, 0]) > min_bbox_size) & (
        (boxes[:, 3] - boxes[:, 1]) > min_bbox_size)


class DetectionOutputs(nn.Module):
    """An mmdet single-stage detector (anchor-based dense head: RetinaNet and its kin) from the
    normalised image (1, 3, H, W) to padded final detections (see the module docstring).

    Args:
        detector: an mmdet ``SingleStageDetector`` whose ``bbox_head`` has a ``bbox_coder`` and
            a ``prior_generator`` (RetinaNet, SSD-like heads).
        image_shape: the image inside the padded input (see :func:`detections_graph`).

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

    def __init__(self, detector: nn.Module, image_shape: Optional[Tuple[int, int]] = None):
        super().__init__()
        self.image_shape = tuple(image_shape) if image_shape else None
        reason = unsupported(detector)
        if reason:
            raise TypeError(reason)
        if getattr(detector, 'with_rpn', False):
            raise TypeError(f'{type(detector).__name__} is a two-stage detector: use '
                            'TwoStageDetectionOutputs (or detections_graph)')
        cfg = detector.bbox_head.test_cfg
        self.iou_threshold = _nms_settings(cfg, 'test_cfg')
        self.detector = detector
        self.nms_pre = int(cfg.get('nms_pre', -1))
        self.score_thr = float(cfg.get('score_thr', 0.0))
        self.min_bbox_size = float(cfg.get('min_bbox_size', -1))
        self.max_per_img = int(cfg.max_per_img)
        self.train(detector.training)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.shape[0] != 1:
            raise ValueError(f'DetectionOutputs takes one image (batch 1), got {x.shape[0]}')
        boxes, scores, labels, _ = _dense_candidates(
            self.detector.bbox_head, self.detector.extract_feat(x),
            self.image_shape or tuple(x.shape[2:]), self.nms_pre)
        valid = (scores > self.score_thr) & _big_enough(boxes, self.min_bbox_size)
        scores = torch.where(valid, scores, torch.zeros_like(scores))
        keep = _batched_nms(boxes, scores, labels, self.iou_threshold)[:self.max_per_img]
        return _padded(boxes[keep], scores[keep], labels[keep], valid[keep].sum().reshape(1),
                       self.max_per_img)


def _roi_features(extractor, feats, rois: torch.Tensor) -> torch.Tensor:
    """mmdet's ``SingleRoIExtractor``: each RoI through RoIAlign (ONNX ``RoiAlign``,
    half-pixel: mmcv's ``aligned=True``) on the level mmdet maps it to (``map_roi_levels``), the
    results scattered back in the RoIs' order (ONNX ``NonZero``, ``ScatterND``). Each RoI is
    pooled once: pooling every RoI on every level and selecting was 15% of Mask R-CNN's
    deployed time at 800x1333, four times the pooling this does."""
    import torchvision
    layers = extractor.roi_layers
    if len(layers) == 1:
        return torchvision.ops.roi_align(feats[0], rois, layers[0].output_size,
                                         layers[0].spatial_scale, layers[0].sampling_ratio,
                                         layers[0].aligned)
    levels = extractor.map_roi_levels(rois, len(layers))
    # (N, C, h, w) zeros, N from the RoIs (no len(): a traced len() is a constant)
    out = torch.zeros_like(rois[:, :1, None, None]).expand(
        -1, feats[0].shape[1], *layers[0].output_size).contiguous()
    for level, layer in enumerate(layers):
        index = torch.nonzero(levels == level).reshape(-1)
        out[index] = torchvision.ops.roi_align(feats[level], rois[index], layer.output_size,
                                               layer.spatial_scale, layer.sampling_ratio,
                                               layer.aligned)
    return out


class TwoStageDetectionOutputs(nn.Module):
    """An mmdet two-stage detector (RPN + ``StandardRoIHead``: Faster and Mask R-CNN) from the
    normalised image (1, 3, H, W) to padded final detections, and for Mask R-CNN their masks.

    The steps are mmdet 3.3's ``TwoStageDetector.predict``:

    1. RPN: per level the ``test_cfg.rpn.nms_pre`` highest anchors, decoded, boxes not larger
       than ``min_bbox_size`` removed, NMS per level (``batched_nms`` by level), the first
       ``max_per_img`` proposals;
    2. RoI head: RoIAlign on each proposal's level, the bbox head, softmax scores, class boxes
       decoded from the proposals, (proposal, class) pairs above ``test_cfg.rcnn.score_thr``,
       per-class NMS, the first ``max_per_img``;
    3. Mask R-CNN: RoIAlign on the final boxes, the mask head, the sigmoid of each box's class
       channel.

    Unlike the single-stage graph, the candidates are filtered by size and score before NMS
    (``NonZero``, a data-dependent count): the RoI head's candidates are every (proposal, class)
    pair, 80 000 for 1000 proposals and 80 classes, too many to carry through NMS with score 0.

    Outputs: ``dets`` (1, K, 5), ``labels`` (1, K), ``num_dets`` (1,) as the single-stage graph,
    K = ``test_cfg.rcnn.max_per_img``; with a mask head also ``masks`` (1, K, M, M): the mask
    probabilities at the mask head's resolution (28 x 28) inside each box. mmdet pastes them
    into the image (bilinear, box to pixels) and thresholds at ``mask_thr_binary`` (0.5); an app
    does the same (see the deployment guide).

    Args:
        detector: an mmdet ``TwoStageDetector`` with an anchor-based RPN and a
            ``StandardRoIHead`` (SingleRoIExtractor with RoIAlign, no shared head).
        image_shape: the image inside the padded input (see :func:`detections_graph`).

    Example:
        >>> import torch
        >>> from vt_mm.analysis import build_model
        >>> detector, _, _ = build_model('vt_mm::vtfpn/mask-rcnn_r50_vtfpn_1x_coco.py')
        >>> net = TwoStageDetectionOutputs(detector.eval()).eval()
        >>> dets, labels, num_dets, masks = net(torch.randn(1, 3, 128, 160))
        >>> dets.shape, masks.shape
        (torch.Size([1, 100, 5]), torch.Size([1, 100, 28, 28]))
    """

    def __init__(self, detector: nn.Module, image_shape: Optional[Tuple[int, int]] = None):
        super().__init__()
        self.image_shape = tuple(image_shape) if image_shape else None
        if not getattr(detector, 'with_rpn', False):
            raise TypeError(f'{type(detector).__name__} has no RPN: use DetectionOutputs (or '
                            'detections_graph)')
        reason = unsupported(detector)
        if reason:
            raise TypeError(reason)
        rpn_cfg = detector.rpn_head.test_cfg
        rcnn_cfg = detector.roi_head.test_cfg
        self.rpn_iou_threshold = _nms_settings(rpn_cfg, 'test_cfg.rpn')
        self.iou_threshold = _nms_settings(rcnn_cfg, 'test_cfg.rcnn')
        self.detector = detector
        self.rpn_nms_pre = int(rpn_cfg.get('nms_pre', -1))
        self.rpn_min_bbox_size = float(rpn_cfg.get('min_bbox_size', -1))
        self.rpn_max_per_img = int(rpn_cfg.max_per_img)
        self.score_thr = float(rcnn_cfg.get('score_thr', 0.0))
        self.max_per_img = int(rcnn_cfg.max_per_img)
        self.with_mask = detector.roi_head.with_mask
        self.train(detector.training)

    @property
    def output_names(self) -> Tuple[str, ...]:
        return DETECTION_OUTPUTS + (('masks', ) if self.with_mask else ())

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.shape[0] != 1:
            raise ValueError('TwoStageDetectionOutputs takes one image (batch 1), got '
                             f'{x.shape[0]}')
        image_shape = self.image_shape or tuple(x.shape[2:])
        feats = self.detector.extract_feat(x)
        proposals = self._proposals(feats, image_shape)
        roi_head = self.detector.roi_head
        bbox_head = roi_head.bbox_head
        # no len(): a traced len() would fix the proposal count in the graph
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        extractor = roi_head.bbox_roi_extractor
        cls_score, bbox_pred = bbox_head(_roi_features(extractor, feats[:extractor.num_inputs],
                                                       rois))
        scores = cls_score.softmax(-1)[:, :-1]  # the last class is the background
        num_classes = scores.shape[1]
        if bbox_head.reg_class_agnostic:
            boxes = _decode(bbox_head.bbox_coder, proposals, bbox_pred, image_shape)
            boxes = boxes[:, None].expand(-1, num_classes, 4)
        else:  # each proposal once per class, as mmdet's repeat_interleave
            boxes = _decode(bbox_head.bbox_coder,
                            proposals[:, None].expand(-1, num_classes, 4).reshape(-1, 4),
                            bbox_pred.reshape(-1, bbox_head.bbox_coder.encode_size), image_shape)
        boxes = boxes.reshape(-1, 4)
        labels = torch.arange(num_classes, device=x.device)[None].expand_as(scores).reshape(-1)
        scores = scores.reshape(-1)
        # mmdet's multiclass_nms: the pairs above the threshold, per-class NMS, the first K
        above = torch.nonzero(scores > self.score_thr).reshape(-1)
        boxes, scores, labels = boxes[above], scores[above], labels[above]
        keep = _batched_nms(boxes, scores, labels, self.iou_threshold)[:self.max_per_img]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        num_dets = torch.ones_like(labels).sum().reshape(1)
        masks = self._masks(feats, boxes, labels) if self.with_mask else None
        return _padded(boxes, scores, labels, num_dets, self.max_per_img, masks)

    def _proposals(self, feats, image_shape) -> torch.Tensor:
        """The RPN's proposals (N, 4), mmdet's ``RPNHead.predict`` without rescaling."""
        boxes, scores, _, levels = _dense_candidates(self.detector.rpn_head, feats, image_shape,
                                                     self.rpn_nms_pre)
        big = torch.nonzero(_big_enough(boxes, self.rpn_min_bbox_size)).reshape(-1)
        boxes, scores, levels = boxes[big], scores[big], levels[big]
        keep = _batched_nms(boxes, scores, levels, self.rpn_iou_threshold)
        return boxes[keep[:self.rpn_max_per_img]]

    def _masks(self, feats, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each box's mask probabilities (N, M, M) for its class, mmdet's ``predict_mask``
        before the paste into the image."""
        roi_head = self.detector.roi_head
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)
        extractor = roi_head.mask_roi_extractor
        mask_preds = roi_head.mask_head(_roi_features(extractor,
                                                      feats[:extractor.num_inputs], rois))
        if roi_head.mask_head.class_agnostic:
            return mask_preds[:, 0].sigmoid()
        index = labels[:, None, None, None].expand(-1, 1, *mask_preds.shape[2:])
        return mask_preds.gather(1, index)[:, 0].sigmoid()


def detections_graph(detector: nn.Module,
                     image_shape: Optional[Tuple[int, int]] = None) -> nn.Module:
    """The detections graph of an mmdet detector: :class:`TwoStageDetectionOutputs` for
    two-stage detectors, :class:`DetectionOutputs` for single-stage ones.

    Args:
        detector: an mmdet detector (eval mode).
        image_shape: (H, W) of the image inside the graph's padded input: boxes and proposals
            are clipped to it, as mmdet clips to ``img_shape`` (the resized image before the
            batch padding). Default: the whole input (an image resized to fill it).
    """
    if getattr(detector, 'with_rpn', False):
        return TwoStageDetectionOutputs(detector, image_shape)
    return DetectionOutputs(detector, image_shape)


def output_names(net: nn.Module) -> Tuple[str, ...]:
    """The output names of a detections graph (``masks`` last, where it has them)."""
    return getattr(net, 'output_names', DETECTION_OUTPUTS)


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                 iou_threshold: float) -> torch.Tensor:
    """mmcv's ``batched_nms``: each group's boxes offset beyond every other group's so that
    groups never overlap, one NMS; the kept indices, highest score first."""
    import torchvision
    # max with 0: an empty candidate set has no max (the boxes are clipped to >= 0)
    extent = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max() + 1
    offsets = groups.to(boxes.dtype) * extent
    return torchvision.ops.nms(boxes + offsets[:, None], scores, iou_threshold)


def _padded(boxes, scores, labels, num_dets, limit: int, masks=None) -> Tuple:
    """``dets`` (1, limit, 5), ``labels`` (1, limit)[, ``masks`` (1, limit, h, w)] and
    ``num_dets`` of the first rows of the kept detections; the rows past ``num_dets`` zero."""
    dets = torch.cat([boxes, scores[:, None]], dim=1)
    dets = torch.cat([dets, dets.new_zeros(limit, 5)])[:limit]
    labels = torch.cat([labels, labels.new_zeros(limit)])[:limit]
    rows = torch.arange(limit, device=boxes.device) < num_dets
    outputs = [dets * rows[:, None].to(dets.dtype), labels * rows.to(labels.dtype)]
    if masks is not None:
        masks = torch.cat([masks, masks.new_zeros(limit, *masks.shape[1:])])[:limit]
        outputs.append(masks * rows[:, None, None].to(masks.dtype))
    outputs = [o[None] for o in outputs]
    return (*outputs[:2], num_dets, *outputs[2:])


def detections_of(outputs: Sequence) -> Tuple:
    """``(boxes, scores, labels)`` of a detections graph's outputs ``(dets, labels, num_dets)``
    (tensors or arrays, batch 1), cut at ``num_dets``; with a fourth output ``masks`` also the
    masks ``(N, M, M)``."""
    dets, labels, num_dets = (torch.as_tensor(np.asarray(o)) for o in outputs[:3])
    n = int(num_dets.reshape(-1)[0])
    dets = dets.reshape(-1, 5)
    found = (dets[:n, :4], dets[:n, 4], labels.reshape(-1)[:n].long())
    if len(outputs) > 3:
        masks = torch.as_tensor(np.asarray(outputs[3]))
        found += (masks.reshape(-1, *masks.shape[-2:])[:n], )
    return found


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, image_shape: Tuple[int, int],
                threshold: float = 0.5) -> torch.Tensor:
    """Box-resolution mask probabilities (N, M, M) -> binary image masks (N, H, W), as mmdet's
    ``FCNMaskHead`` pastes them (bilinear from the box to the pixels, then ``>= threshold``):
    the step an app does after the detections graph."""
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    masks = torch.as_tensor(np.asarray(masks)).float()
    boxes = torch.as_tensor(np.asarray(boxes)).float()
    pasted, _ = _do_paste_mask(masks[:, None], boxes, int(image_shape[0]), int(image_shape[1]),
                               skip_empty=False)
    return pasted >= threshold


def match_detections(got: Tuple, expected: Tuple, min_iou: float = MIN_IOU,
                     score_atol: float = SCORE_ATOL,
                     min_mask_agreement: float = MIN_MASK_AGREEMENT) -> Tuple[bool, str]:
    """Whether two detection results are the same: every expected detection has one of its
    class with IoU >= ``min_iou`` and a score within ``score_atol``, and there are no others;
    where both carry masks, each matched pair's masks (thresholded at 0.5) agree on at least
    ``min_mask_agreement`` of their pixels.

    Args:
        got, expected: ``(boxes (N, 4), scores (N,), labels (N,)[, masks (N, h, w)])`` each
            (arrays or tensors; :func:`detections_of` of a detections graph's outputs, or
            mmdet's ``pred_instances``).
        min_iou: the IoU a matching box must reach.
        score_atol: the largest score difference of a match.
        min_mask_agreement: the smallest share of equal pixels of two matched masks.

    Returns:
        (ok, message): the message names the first detection without a match.
    """
    boxes_g, scores_g, labels_g = (torch.as_tensor(np.asarray(t)) for t in got[:3])
    boxes_e, scores_e, labels_e = (torch.as_tensor(np.asarray(t)) for t in expected[:3])
    if len(boxes_g) != len(boxes_e):
        return False, f'{len(boxes_g)} detections, expected {len(boxes_e)}'
    used = torch.zeros(len(boxes_g), dtype=torch.bool)
    import torchvision
    iou = torchvision.ops.box_iou(boxes_e.double(), boxes_g.double()) if len(boxes_g) else None
    pairs = []
    for i in range(len(boxes_e)):
        candidates = ((labels_g == labels_e[i]) & ~used & (iou[i] >= min_iou) &
                      ((scores_g.double() - float(scores_e[i])).abs() <= score_atol))
        if not bool(candidates.any()):
            return False, (f'expected detection {i} (class {int(labels_e[i])}, score '
                           f'{float(scores_e[i]):.4f}, box {boxes_e[i].tolist()}) has no match')
        best = int(torch.where(candidates, iou[i], torch.full_like(iou[i], -1)).argmax())
        used[best] = True
        pairs.append((i, best))
    if len(got) > 3 and len(expected) > 3:
        masks_g, masks_e = (torch.as_tensor(np.asarray(m)) for m in (got[3], expected[3]))
        if masks_g.shape[1:] != masks_e.shape[1:]:
            raise ValueError(f'masks of {tuple(masks_g.shape[1:])} and '
                             f'{tuple(masks_e.shape[1:])} pixels: paste both into the image '
                             'first (paste_masks)')
        for i, j in pairs:
            agreement = float(((masks_e[i] >= 0.5) == (masks_g[j] >= 0.5)).double().mean())
            if agreement < min_mask_agreement:
                return False, (f'expected detection {i} (class {int(labels_e[i])}): the masks '
                               f'agree on {agreement:.2%} of the pixels')
        return True, f'{len(boxes_e)} detections and their masks match'
    return True, f'{len(boxes_e)} detections match'
