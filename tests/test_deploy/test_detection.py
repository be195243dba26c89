"""Detectors from the image to final detections (vt_mm/deploy/detection.py): the graphs'
post-processing (single-stage; RPN + RoI heads + masks) equals mmdet's own prediction, the
comparison of two detection results at its boundaries, and the detections graphs in the runtimes
that have NonMaxSuppression."""
import os.path as osp

import numpy as np
import pytest
import torch
from helpers.export import small_config, trained_like_bn

from vt_mm.analysis import build_model
from vt_mm.analysis.detection_scores import spread_dense_scores, spread_rcnn_scores
from vt_mm.deploy.backends import BACKENDS, get_backend
from vt_mm.deploy.detection import (
    DETECTION_OUTPUTS,
    DetectionOutputs,
    TwoStageDetectionOutputs,
    detections_graph,
    detections_of,
    match_detections,
    paste_masks,
    unsupported,
)
from vt_mm.models.wrappers import unscaled_det_samples


def _mmdet_detections(model, x):
    """mmdet's own prediction of ``x`` (already normalised, so the resize factor is 1):
    ``(boxes, scores, labels)``, and the image masks where it predicts masks."""
    with torch.no_grad():
        result = model.predict(x, unscaled_det_samples(x), rescale=True)[0]
    instances = result.pred_instances
    found = (instances.bboxes, instances.scores, instances.labels)
    return found + ((instances.masks, ) if 'masks' in instances else ())


def _graph_detections(outputs, image_shape):
    """:func:`detections_of` the graph's outputs, the masks pasted into the image as an app
    does (mmdet's paste) so that they compare with mmdet's."""
    found = detections_of(outputs)
    if len(found) > 3:
        found = found[:3] + (paste_masks(found[3], found[0], image_shape), )
    return found


@pytest.fixture(scope='module')
def retinanet(tmp_path_factory):
    """RetinaNet + VT-FPN (ResNet-18, 64 channels), BN statistics like a trained model's."""
    torch.manual_seed(0)
    model, _, _ = build_model(small_config('retinanet_vtfpn_small',
                                           tmp_path_factory.mktemp('cfg')))
    return trained_like_bn(model, affine=False).eval()


def _image(seed, shape=(96, 128)):
    return torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('test_cfg', [
    {},  # the config's own: nms_pre 1000, score_thr 0.05, iou 0.5, max_per_img 100
    dict(nms_pre=30),  # the per-level top-k cuts candidates above the threshold
    dict(max_per_img=7),  # the final cut
    dict(min_bbox_size=30.0),  # small boxes removed (the smallest anchors are 32 pixels)
    dict(nms=dict(type='nms', iou_threshold=0.2)),  # NMS suppresses more
    dict(score_thr=0.2),
], ids=['config', 'nms_pre', 'max_per_img', 'min_bbox_size', 'iou', 'score_thr'])
@pytest.mark.parametrize('seed', [1, 2])
def test_the_graph_detects_what_mmdet_predicts(retinanet, test_cfg, seed):
    import copy
    model = copy.deepcopy(retinanet)
    model.bbox_head.test_cfg.update(test_cfg)
    x = _image(seed)
    spread_dense_scores(model, x, count=60)
    expected = _mmdet_detections(model, x)
    net = DetectionOutputs(model).eval()
    with torch.no_grad():
        dets, labels, num_dets = net(x)
    limit = model.bbox_head.test_cfg.max_per_img
    assert dets.shape == (1, limit, 5) and labels.shape == (1, limit)
    assert labels.dtype == torch.int64 and num_dets.shape == (1, )
    assert 0 < len(expected[0]) <= limit  # something to compare
    assert int(num_dets[0]) == len(expected[0])
    ok, message = match_detections(detections_of((dets, labels, num_dets)), expected)
    assert ok, message
    # padded rows are zero
    n = int(num_dets[0])
    assert not dets[0, n:].any() and not labels[0, n:].any()


@pytest.fixture(scope='module')
def mask_rcnn(tmp_path_factory):
    """Mask R-CNN + VT-FPN (ResNet-18, 64 channels), BN statistics like a trained model's."""
    torch.manual_seed(0)
    model, _, _ = build_model(small_config('mask_rcnn_vtfpn_small',
                                           tmp_path_factory.mktemp('cfg')))
    return trained_like_bn(model, affine=False).eval()


def _faster(mask_rcnn):
    """The same detector without its mask head: Faster R-CNN."""
    import copy
    model = copy.deepcopy(mask_rcnn)
    model.roi_head.mask_head = model.roi_head.mask_roi_extractor = None
    assert not model.roi_head.with_mask
    return model


@pytest.mark.parametrize('rpn_cfg,rcnn_cfg', [
    ({}, {}),  # the config's own: RPN nms_pre 1000, NMS 0.7, 1000 proposals; RoI head NMS 0.5
    (dict(nms_pre=40), {}),  # the per-level top-k cuts the anchors
    (dict(max_per_img=25), {}),  # fewer proposals
    (dict(min_bbox_size=24.0), {}),  # small proposals removed before NMS
    (dict(nms=dict(type='nms', iou_threshold=0.3)), {}),  # the RPN's NMS suppresses more
    ({}, dict(max_per_img=7)),  # the final cut
    ({}, dict(nms=dict(type='nms', iou_threshold=0.2))),
], ids=['config', 'rpn_nms_pre', 'proposals', 'rpn_min_bbox_size', 'rpn_iou', 'max_per_img',
        'iou'])
@pytest.mark.parametrize('seed', [1, 2])
@pytest.mark.parametrize('masks', [True, False], ids=['mask_rcnn', 'faster_rcnn'])
def test_the_two_stage_graph_detects_what_mmdet_predicts(mask_rcnn, rpn_cfg, rcnn_cfg, seed,
                                                         masks):
    import copy
    model = copy.deepcopy(mask_rcnn) if masks else _faster(mask_rcnn)
    x = _image(seed)
    spread_rcnn_scores(model, x, count=40)
    model.rpn_head.test_cfg.update(rpn_cfg)
    model.roi_head.test_cfg.update(rcnn_cfg)
    expected = _mmdet_detections(model, x)
    net = detections_graph(model).eval()
    assert isinstance(net, TwoStageDetectionOutputs)
    with torch.no_grad():
        outputs = net(x)
    # the RPN's proposals are mmdet's, in mmdet's order
    with torch.no_grad():
        feats = model.extract_feat(x)
        proposals = net._proposals(feats, tuple(x.shape[2:]))
        mmdet_proposals = model.rpn_head.predict(feats, unscaled_det_samples(x),
                                                 rescale=False)[0].bboxes
    assert proposals.shape == mmdet_proposals.shape
    torch.testing.assert_close(proposals, mmdet_proposals)
    limit = model.roi_head.test_cfg.max_per_img
    assert len(outputs) == (4 if masks else 3)
    dets, labels, num_dets = outputs[:3]
    assert dets.shape == (1, limit, 5) and labels.shape == (1, limit)
    assert labels.dtype == torch.int64 and num_dets.shape == (1, )
    assert 0 < len(expected[0]) <= limit  # something to compare
    assert len(expected) == len(outputs)  # mmdet predicts masks where the graph does
    ok, message = match_detections(_graph_detections(outputs, x.shape[2:]), expected)
    assert ok, message
    n = int(num_dets[0])
    assert not dets[0, n:].any() and not labels[0, n:].any()
    if masks:
        assert outputs[3].shape == (1, limit, 28, 28)
        assert not outputs[3][0, n:].any() and outputs[3][0, :n].max() <= 1
        assert outputs[3][0, :n].min() >= 0 and outputs[3][0, :n].std() > 0


def test_the_two_stage_graph_cuts_at_max_per_img_when_more_pass(mask_rcnn):
    """More (proposal, class) pairs than max_per_img survive NMS: mmdet keeps the highest
    max_per_img, so does the graph."""
    model = _faster(mask_rcnn)
    x = _image(1)
    spread_rcnn_scores(model, x, count=400)
    expected = _mmdet_detections(model, x)
    assert len(expected[0]) == model.roi_head.test_cfg.max_per_img == 100
    with torch.no_grad():
        outputs = detections_graph(model).eval()(x)
    assert int(outputs[2][0]) == 100
    ok, message = match_detections(detections_of(outputs), expected)
    assert ok, message


def test_nothing_above_the_threshold_is_zero_detections(retinanet):
    """A fresh head scores every pair near its prior (0.01 < score_thr): no detections, all
    rows zero, as mmdet predicts none."""
    x = _image(3)
    assert len(_mmdet_detections(retinanet, x)[0]) == 0
    with torch.no_grad():
        dets, labels, num_dets = DetectionOutputs(retinanet).eval()(x)
    assert int(num_dets[0]) == 0 and not dets.any() and not labels.any()


def test_what_the_graph_refuses(retinanet):
    import copy
    from types import SimpleNamespace
    net = DetectionOutputs(retinanet).eval()
    with pytest.raises(ValueError, match='takes one image .batch 1., got 2'):
        net(torch.zeros(2, 3, 64, 64))
    soft = copy.deepcopy(retinanet)
    soft.bbox_head.test_cfg.nms = dict(type='soft_nms', iou_threshold=0.5)
    with pytest.raises(ValueError, match="plain per-class NMS only \\(type='nms'\\)"):
        DetectionOutputs(soft)
    no_head = torch.nn.Module()
    with pytest.raises(TypeError, match='takes single-stage detectors .a bbox_head. and '
                                        'two-stage ones .an RPN and a StandardRoIHead.; '
                                        "export this one's backbone"):
        DetectionOutputs(no_head)
    anchor_free = torch.nn.Module()
    anchor_free.bbox_head = SimpleNamespace(bbox_coder=None, prior_generator=object(),
                                            test_cfg={})
    with pytest.raises(TypeError, match='has no bbox_coder: the detections graph takes '
                                        'anchor-based dense heads'):
        DetectionOutputs(anchor_free)


def test_the_export_tool_defaults_to_detections_where_the_graph_takes_the_detector(mask_rcnn):
    import copy

    from helpers import load_script
    export = load_script('tools/deployment/export.py', 'export_tool')
    assert export.default_output(mask_rcnn, 'mmdet') == 'detections'
    assert export.default_output(_faster(mask_rcnn), 'mmdet') == 'detections'
    panoptic = copy.deepcopy(mask_rcnn)
    panoptic.__class__ = type('PanopticFPN', (type(mask_rcnn), ), {'with_semantic_head': True})
    assert export.default_output(panoptic, 'mmdet') == 'logits'


def test_what_the_two_stage_graph_refuses(mask_rcnn, retinanet):
    import copy
    from types import SimpleNamespace
    with pytest.raises(TypeError, match='is a two-stage detector: use TwoStageDetectionOutputs'):
        DetectionOutputs(mask_rcnn)
    with pytest.raises(TypeError, match='has no RPN: use DetectionOutputs'):
        TwoStageDetectionOutputs(retinanet)
    net = TwoStageDetectionOutputs(mask_rcnn)
    assert net.output_names == ('dets', 'labels', 'num_dets', 'masks')
    assert TwoStageDetectionOutputs(_faster(mask_rcnn)).output_names == DETECTION_OUTPUTS
    with pytest.raises(ValueError, match='takes one image .batch 1., got 2'):
        net(torch.zeros(2, 3, 64, 64))
    for stage, where in (('rpn_head', 'test_cfg.rpn'), ('roi_head', 'test_cfg.rcnn')):
        soft = copy.deepcopy(mask_rcnn)
        getattr(soft, stage).test_cfg.nms = dict(type='soft_nms', iou_threshold=0.5)
        with pytest.raises(ValueError, match=f"{where}.nms = .*plain per-class NMS only"):
            TwoStageDetectionOutputs(soft)
    max_pool = copy.deepcopy(mask_rcnn)
    max_pool.roi_head.mask_roi_extractor.roi_layers[2].pool_mode = 'max'
    with pytest.raises(TypeError, match="RoI layer RoIAlign .pool_mode 'max'.: the detections "
                                        "graph takes RoIAlign with pool_mode='avg'"):
        TwoStageDetectionOutputs(max_pool)
    # what is not a StandardRoIHead, panoptic segmentors, a missing RPN head
    dense = SimpleNamespace(bbox_coder=1, prior_generator=1, test_cfg={})
    other = torch.nn.Module()
    other.with_rpn, other.rpn_head, other.roi_head = True, dense, SimpleNamespace()
    assert 'SimpleNamespace: the detections graph takes the StandardRoIHead' in unsupported(
        other)
    panoptic = copy.deepcopy(mask_rcnn)
    panoptic.__class__ = type('PanopticFPN', (type(mask_rcnn), ), {'with_semantic_head': True})
    assert unsupported(panoptic) == (
        'PanopticFPN: the detections graph has no panoptic fusion (semantic head); export '
        "this one's backbone + neck with output='logits'")
    assert unsupported(mask_rcnn) is None
    missing = torch.nn.Module()
    missing.with_rpn = True
    assert unsupported(missing) == 'Module has no rpn_head'


def _detections(boxes, scores, labels):
    return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor(scores, dtype=torch.float32), torch.tensor(labels))


def test_matching_detections_at_its_boundaries():
    """Same count, same classes, IoU >= 0.99 and |score difference| <= 1e-3, in any order."""
    expected = _detections([[0, 0, 100, 100], [10, 10, 50, 50]], [0.9, 0.5], [1, 2])
    assert match_detections(expected, expected) == (True, '2 detections match')
    swapped = _detections([[10, 10, 50, 50], [0, 0, 100, 100]], [0.5, 0.9], [2, 1])
    assert match_detections(swapped, expected)[0]
    # IoU: a box 100 wide grown by 1 has IoU 100 / 101 = 0.9901 (matches), grown by 1.1
    # 100 / 101.1 = 0.9891 (does not)
    assert match_detections(_detections([[0, 0, 101, 100], [10, 10, 50, 50]], [0.9, 0.5],
                                        [1, 2]), expected)[0]
    ok, message = match_detections(_detections([[0, 0, 101.1, 100], [10, 10, 50, 50]],
                                               [0.9, 0.5], [1, 2]), expected)
    assert not ok and message.startswith('expected detection 0 (class 1, score 0.9000')
    # scores: 1e-3 apart matches (float32 rounding below 1e-6 aside), 1.1e-3 does not
    assert match_detections(_detections([[0, 0, 100, 100], [10, 10, 50, 50]], [0.9, 0.501],
                                        [1, 2]), expected)[0]
    assert not match_detections(_detections([[0, 0, 100, 100], [10, 10, 50, 50]],
                                            [0.9, 0.5011], [1, 2]), expected)[0]
    # another class, one missing, one extra, two expected matched by the same one
    assert not match_detections(_detections([[0, 0, 100, 100], [10, 10, 50, 50]], [0.9, 0.5],
                                            [1, 3]), expected)[0]
    assert match_detections(_detections([[0, 0, 100, 100]], [0.9], [1]), expected) == (
        False, '1 detections, expected 2')
    twice = _detections([[0, 0, 100, 100], [0, 0, 100, 100]], [0.9, 0.9], [1, 1])
    assert not match_detections(_detections([[0, 0, 100, 100], [5, 5, 7, 7]], [0.9, 0.9],
                                            [1, 1]), twice)[0]
    empty = _detections([], [], [])
    assert match_detections(empty, empty) == (True, '0 detections match')


def test_matching_masks_at_their_boundary():
    """Matched detections' masks (thresholded at 0.5) must agree on >= 99% of their pixels:
    1 of 100 pixels off matches, 2 do not; masks of other sizes are refused."""
    boxes, scores, labels = _detections([[0, 0, 100, 100], [10, 10, 50, 50]], [0.9, 0.5], [1, 2])
    masks = torch.zeros(2, 10, 10)
    masks[:, 2:6, 3:8] = 0.7
    expected = (boxes, scores, labels, masks)
    assert match_detections(expected, expected) == (True,
                                                    '2 detections and their masks match')
    one_off, two_off = masks.clone(), masks.clone()
    one_off[1, 9, 9] = 0.5  # >= 0.5 is in the mask
    two_off[1, 9, 8:] = 0.5
    # in any order: the masks follow their detections
    swapped = (boxes.flip(0), scores.flip(0), labels.flip(0), one_off.flip(0))
    assert match_detections(swapped, expected)[0]
    assert match_detections((boxes, scores, labels, two_off), expected) == (
        False, 'expected detection 1 (class 2): the masks agree on 98.00% of the pixels')
    assert match_detections((boxes, scores, labels), expected)[0]  # no masks to compare
    with pytest.raises(ValueError, match=r'masks of \(10, 10\) and \(20, 10\) pixels: '
                                         'paste both into the image first'):
        match_detections(expected, (boxes, scores, labels, torch.zeros(2, 20, 10)))


def test_pasted_masks_cover_their_box():
    """paste_masks: a box-resolution mask of ones becomes the box's pixels in the image."""
    pasted = paste_masks(np.ones((1, 28, 28), np.float32), np.array([[2., 3., 10., 7.]]),
                         (12, 16))
    assert pasted.shape == (1, 12, 16) and pasted.dtype == torch.bool
    rows, cols = np.nonzero(pasted[0].numpy())
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 6, 2, 9)


def test_detections_of_cuts_the_padded_outputs_at_num_dets():
    dets = np.zeros((1, 4, 5), np.float32)
    dets[0, :2] = [[1, 2, 3, 4, 0.5], [5, 6, 7, 8, 0.25]]
    boxes, scores, labels = detections_of([dets, np.array([[3, 1, 0, 0]]), np.array([2])])
    assert boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert scores.tolist() == [0.5, 0.25] and labels.tolist() == [3, 1]
    masks = np.arange(4 * 9, dtype=np.float32).reshape(1, 4, 3, 3)
    found = detections_of([dets, np.array([[3, 1, 0, 0]]), np.array([2]), masks])
    assert len(found) == 4 and found[3].tolist() == masks[0, :2].tolist()


def test_exports_of_detections(retinanet, tmp_path):
    from vt_mm.deploy.onnx import export_onnx, exportable
    with pytest.raises(ValueError, match="output='detections' graphs are static"):
        export_onnx(retinanet, str(tmp_path / 'd.onnx'), (64, 64), output='detections')
    classifier, _, _ = build_model(osp.join(
        osp.dirname(__file__), '..', '..', 'configs', 'vt_resnet', 'vt-resnet18_8xb32_in1k.py'))
    with pytest.raises(ValueError, match="output='detections' is for mmdet detectors; this is "
                                         'an mmpretrain model'):
        exportable(classifier, output='detections')
    assert isinstance(exportable(retinanet, output='detections'), DetectionOutputs)


def test_runtimes_without_nms_refuse_the_detections_graph_naming_the_others():
    nms = sorted(name for name, backend in BACKENDS.items() if not backend.nms_missing)
    assert nms == ['mnn', 'onnxruntime', 'openvino']
    for name in ('ncnn', 'tflite'):
        backend = BACKENDS[name]
        backend.check_output('logits')  # features and logits: fine
        with pytest.raises(ValueError) as info:
            backend.check_output('detections')
        message = str(info.value)
        assert message.startswith(f'{name} {backend.version()} cannot run the detections graph: ')
        assert 'Detections run in mnn, onnxruntime, openvino; --output logits exports' in message
    assert BACKENDS['ncnn'].version()[0].isdigit()  # a real version, not 'unknown'


@pytest.mark.runtime
@pytest.mark.parametrize('config,shape', [('retinanet_vtfpn_small', (96, 128)),
                                          ('pyramid_tnt_det_small', (96, 128)),
                                          ('faster_rcnn_vtfpn_small', (96, 128)),
                                          ('mask_rcnn_vtfpn_small', (96, 128)),
                                          ('pyramid_tnt_mask_rcnn_small', (96, 128))])
def test_detections_in_every_runtime_with_nms(config, shape, tmp_path):
    """The detections graph in onnxruntime, OpenVINO and MNN: each runtime's detections (and
    Mask R-CNN's masks) are PyTorch's and mmdet's own; ncnn and TFLite are refused with the
    operator they lack."""
    from vt_mm.deploy.pipeline import deploy
    pytest.importorskip('onnxruntime')
    missing = {n: BACKENDS[n].missing() for n in BACKENDS if BACKENDS[n].missing()}
    if missing:
        pytest.skip(f'runtimes not installed: {missing} (bash dev/setup_env.sh --deploy)')
    torch.manual_seed(0)
    model, _, _ = build_model(small_config(config, tmp_path))
    model = trained_like_bn(model, affine=False).eval()
    x = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))  # deploy's input
    two_stage = 'rcnn' in config
    (spread_rcnn_scores if two_stage else spread_dense_scores)(model, x, count=40)
    report = deploy(model, ['onnxruntime', 'openvino', 'mnn', 'ncnn', 'tflite'], shape,
                    str(tmp_path / 'out'), 'det', toolbox='mmdet', output='detections',
                    repeats=1)
    assert np.array_equal(report.example, x.numpy())
    masks = ['masks'] if 'mask_rcnn' in config else []
    assert report.outputs == list(DETECTION_OUTPUTS) + masks
    assert report.onnx.endswith('det.detections.onnx')  # beside the features graph, not over it
    assert 'NonMaxSuppression' in report.op_counts
    assert ('RoiAlign' in report.op_counts) == two_stage
    expected = _mmdet_detections(model, x)
    assert len(expected[0]) > 10
    for result in report.results:
        if result.backend in ('ncnn', 'tflite'):
            assert 'cannot run the detections graph' in result.error, result.line()
            continue
        assert result.ok and result.detections_match, result.line()
        if masks:
            assert result.detections_message.endswith('detections and their masks match')
        run = get_backend(result.backend).load(result.files, report.jobs[result.backend])
        ok, message = match_detections(_graph_detections(run(report.example), shape), expected)
        assert ok, (result.backend, message)


@pytest.mark.runtime
def test_export_tool_writes_the_detections_graph_by_default(tmp_path, capsys):
    """tools/deployment/export.py on a RetinaNet config without --output: the detections
    graph; fresh weights detect nothing, which the tool says instead of claiming a check; ncnn
    is refused and the exit status says a backend failed."""
    from helpers import load_script
    pytest.importorskip('onnxruntime')
    if BACKENDS['ncnn'].missing():
        pytest.skip('ncnn is not installed (bash dev/setup_env.sh --deploy)')
    export = load_script('tools/deployment/export.py', 'export_tool')
    config = small_config('retinanet_vtfpn_small', tmp_path)
    with pytest.raises(SystemExit, match='a backend failed'):
        export.main([config, '--backend', 'onnxruntime', 'ncnn', '--shape', '64', '96',
                     '--repeats', '1', '--out-dir', str(tmp_path / 'out')])
    out, err = capsys.readouterr()
    assert 'at 64x96, output detections' in out
    assert 'onnxruntime: detections match: 0 detections match latency' in out
    assert 'ncnn: FAILED ValueError: ncnn ' in out
    assert 'onnxruntime: no detection above the score threshold on the random example' in err
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == [
        'retinanet_vtfpn_small.detections.onnx']
