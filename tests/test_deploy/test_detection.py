"""Detectors from the image to final detections (vt_mm/deploy/detection.py): the graph's
post-processing equals mmdet's own prediction, the comparison of two detection results at its
boundaries, and the detections graph in the runtimes that have NonMaxSuppression."""
import os.path as osp

import numpy as np
import pytest
import torch
from helpers.det import spread_detection_scores
from helpers.export import small_config, trained_like_bn

from vt_mm.analysis import build_model
from vt_mm.deploy.backends import BACKENDS, get_backend
from vt_mm.deploy.detection import (
    DETECTION_OUTPUTS,
    DetectionOutputs,
    detections_of,
    match_detections,
)
from vt_mm.models.wrappers import unscaled_det_samples


def _mmdet_detections(model, x):
    """mmdet's own prediction of ``x`` (already normalised, so the resize factor is 1)."""
    with torch.no_grad():
        result = model.predict(x, unscaled_det_samples(x), rescale=True)[0]
    instances = result.pred_instances
    return instances.bboxes, instances.scores, instances.labels


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
    spread_detection_scores(model, x, count=60)
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
    two_stage = torch.nn.Module()
    two_stage.bbox_head, two_stage.with_rpn = SimpleNamespace(), True
    with pytest.raises(TypeError, match='takes single-stage detectors .a bbox_head, no RPN.; '
                                        "export this one's backbone"):
        DetectionOutputs(two_stage)
    anchor_free = torch.nn.Module()
    anchor_free.bbox_head = SimpleNamespace(bbox_coder=None, prior_generator=object(),
                                            test_cfg={})
    with pytest.raises(TypeError, match='has no bbox_coder: the detections graph takes '
                                        'anchor-based dense heads'):
        DetectionOutputs(anchor_free)


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


def test_detections_of_cuts_the_padded_outputs_at_num_dets():
    dets = np.zeros((1, 4, 5), np.float32)
    dets[0, :2] = [[1, 2, 3, 4, 0.5], [5, 6, 7, 8, 0.25]]
    boxes, scores, labels = detections_of([dets, np.array([[3, 1, 0, 0]]), np.array([2])])
    assert boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert scores.tolist() == [0.5, 0.25] and labels.tolist() == [3, 1]


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
                                          ('pyramid_tnt_det_small', (96, 128))])
def test_detections_in_every_runtime_with_nms(config, shape, tmp_path):
    """The detections graph in onnxruntime, OpenVINO and MNN: each runtime's detections are
    PyTorch's and mmdet's own; ncnn and TFLite are refused with the operator they lack."""
    from vt_mm.deploy.pipeline import deploy
    pytest.importorskip('onnxruntime')
    missing = {n: BACKENDS[n].missing() for n in BACKENDS if BACKENDS[n].missing()}
    if missing:
        pytest.skip(f'runtimes not installed: {missing} (bash dev/setup_env.sh --deploy)')
    torch.manual_seed(0)
    model, _, _ = build_model(small_config(config, tmp_path))
    model = trained_like_bn(model, affine=False).eval()
    x = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))  # deploy's input
    spread_detection_scores(model, x, count=40)
    report = deploy(model, ['onnxruntime', 'openvino', 'mnn', 'ncnn', 'tflite'], shape,
                    str(tmp_path / 'out'), 'det', toolbox='mmdet', output='detections',
                    repeats=1)
    assert np.array_equal(report.example, x.numpy())
    assert report.outputs == list(DETECTION_OUTPUTS)
    assert report.onnx.endswith('det.detections.onnx')  # beside the features graph, not over it
    assert 'NonMaxSuppression' in report.op_counts
    expected = _mmdet_detections(model, x)
    assert len(expected[0]) > 10
    for result in report.results:
        if result.backend in ('ncnn', 'tflite'):
            assert 'cannot run the detections graph' in result.error, result.line()
            continue
        assert result.ok and result.detections_match, result.line()
        run = get_backend(result.backend).load(result.files, report.jobs[result.backend])
        ok, message = match_detections(detections_of(run(report.example)), expected)
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
