"""A deployed detector scored by mmdet's own evaluator (vt_mm/deploy/detection_accuracy.py and
tools/deployment/deploy_accuracy.py on a detector): the detections graph's box and mask AP equal
mmdet's prediction's. The ground truth is mmdet's own prediction of the generated images, so
that the AP is high and any box, scale or mask error in the deployed path lowers it."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT
from helpers.export import small_config, trained_like_bn

from vt_mm.analysis import build_model
from vt_mm.analysis.detection_scores import spread_rcnn_scores
from vt_mm.deploy import detection_accuracy, exportable


def _config(tmp_path, data_root: str) -> str:
    """Small Mask R-CNN + VT-FPN for the 3 shape classes on the generated COCO data, images
    resized by 1.875 (128x96 -> 240x180, padded to 256x192): rescale, clip and padding are all
    on the path."""
    from vt_mm.datasets.demo_shapes import coco_data_config
    base = small_config('mask_rcnn_vtfpn_small', tmp_path)
    path = tmp_path / 'mask_rcnn_shapes.py'
    path.write_text(f'_base_ = [{base!r}]\n' + coco_data_config(data_root, scale=(240, 192),
                                                                mask=True) +
                    'model = dict(roi_head=dict(bbox_head=dict(num_classes=3), '
                    'mask_head=dict(num_classes=3)))\n')
    return str(path)


def _prediction_as_ground_truth(samples, ann_file: str) -> None:
    """Rewrites the COCO annotations: every image's objects are mmdet's predictions of it."""
    from pycocotools import mask as mask_utils
    with open(ann_file) as f:
        coco = json.load(f)
    annotations = []
    for sample in samples:
        pred = sample.mmdet_pred
        for box, label, mask in zip(pred.bboxes.tolist(), pred.labels.tolist(), pred.masks):
            rle = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
            rle['counts'] = rle['counts'].decode()
            x1, y1, x2, y2 = box
            annotations.append(dict(id=len(annotations) + 1, image_id=sample.data_sample.img_id,
                                    category_id=label + 1, bbox=[x1, y1, x2 - x1, y2 - y1],
                                    area=float(mask.sum()), segmentation=rle, iscrowd=0))
    coco['annotations'] = annotations
    with open(ann_file, 'w') as f:
        json.dump(coco, f)


@pytest.fixture(scope='module')
def detector(tmp_path_factory):
    """(model, cfg, samples, dataset_meta, config path): the small Mask R-CNN with spread
    scores, three generated validation images whose ground truth is its own prediction."""
    from vt_mm.datasets.demo_shapes import make_demo_coco
    tmp_path = tmp_path_factory.mktemp('det_acc')
    data = str(tmp_path / 'coco')
    make_demo_coco(data, 'train', num_images=2, seed=0)
    make_demo_coco(data, 'val', num_images=3, seed=1)
    config = _config(tmp_path, data)
    torch.manual_seed(0)
    model, cfg, _ = build_model(config)
    model = trained_like_bn(model, affine=False).eval()
    samples, _ = detection_accuracy.val_samples(cfg, model)
    spread_rcnn_scores(model, torch.from_numpy(samples[0].inputs), count=30)
    samples, meta = detection_accuracy.val_samples(cfg, model)
    assert all(len(s.mmdet_pred) > 0 for s in samples)
    _prediction_as_ground_truth(samples, osp.join(data, 'annotations', 'instances_val.json'))
    return model, cfg, samples, meta, config


def test_the_samples_are_mmdets_own_test_inputs(detector):
    _, _, samples, meta, _ = detector
    from vt_mm.datasets.demo_shapes import SHAPE_CLASSES
    assert len(samples) == 3 and meta['classes'] == tuple(SHAPE_CLASSES)
    for sample in samples:
        assert sample.inputs.shape == (1, 3, 192, 256)  # 240x180, padded to a multiple of 32
        assert sample.data_sample.img_shape == (180, 240)
        assert sample.data_sample.ori_shape == (96, 128)
        assert sample.data_sample.scale_factor == (1.875, 1.875)


def test_the_graphs_ap_is_mmdets(detector):
    """Box and mask AP of the detections graph (PyTorch) through mmdet's CocoMetric equal the
    AP of mmdet's own prediction (1.0: it is the ground truth), image by image equal too, when
    the graph clips to the image inside the padding as mmdet does (image_shape); clipping to
    the padded input instead changes the proposals near the padding, and the AP."""
    model, cfg, samples, meta, _ = detector
    expected = detection_accuracy.evaluate(cfg, meta, samples, lambda s: s.mmdet_pred)
    assert expected['coco/bbox_mAP'] > 0.9 and expected['coco/segm_mAP'] > 0.9
    net = exportable(model, 'mmdet', 'detections', image_shape=(180, 240)).eval()
    deployed = {}

    def predict(sample):
        with torch.no_grad():
            outputs = net(torch.from_numpy(sample.inputs))
        deployed[id(sample)] = detection_accuracy.instances(outputs, sample.data_sample)
        return deployed[id(sample)]
    got = detection_accuracy.evaluate(cfg, meta, samples, predict)
    for metric in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert abs(got[metric] - expected[metric]) <= 0.005, (metric, got, expected)
    assert all(detection_accuracy.equal_to_mmdet(deployed[id(s)], s) for s in samples)
    padded = exportable(model, 'mmdet', 'detections').eval()
    with torch.no_grad():
        clipped_to_input = [detection_accuracy.instances(padded(torch.from_numpy(s.inputs)),
                                                         s.data_sample) for s in samples]
    assert not all(detection_accuracy.equal_to_mmdet(p, s)
                   for p, s in zip(clipped_to_input, samples))


def test_instances_undo_the_resize_as_mmdet_does():
    """Boxes clipped to the resized image (not the padded input), divided by the resize
    factor; masks pasted into the original image."""
    from types import SimpleNamespace
    dets = np.zeros((1, 3, 5), np.float32)
    dets[0, :2] = [[30, 15, 75, 45, 0.9], [-6, 150, 300, 190, 0.6]]
    masks = np.ones((1, 3, 28, 28), np.float32)
    sample = SimpleNamespace(img_shape=(180, 240), ori_shape=(120, 160), scale_factor=(1.5, 1.5))
    result = detection_accuracy.instances([dets, np.array([[2, 1, 0]]), np.array([2]), masks],
                                          sample)
    assert result.bboxes.tolist() == [[20, 10, 50, 30], [0, 100, 160, 120]]
    assert result.scores.tolist() == pytest.approx([0.9, 0.6]) and result.labels.tolist() == [2, 1]
    assert result.masks.shape == (2, 120, 160)
    rows, cols = np.nonzero(result.masks[0].numpy())
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 29, 20, 49)
    # another scale per axis: (w, h) factors
    sample.scale_factor = (2.0, 1.5)
    boxes = detection_accuracy.instances([dets, np.array([[2, 1, 0]]), np.array([1])],
                                         sample).bboxes
    assert boxes.tolist() == [[15, 10, 37.5, 30]] and 'masks' not in detection_accuracy.instances(
        [dets, np.array([[2, 1, 0]]), np.array([1])], sample)


@pytest.mark.runtime
def test_accuracy_tool_scores_a_detector_per_runtime(detector, tmp_path):
    """tools/deployment/deploy_accuracy.py on a Mask R-CNN checkpoint: mmdet's AP, PyTorch's
    graph's and onnxruntime's equal (within 0.005), every image's detections mmdet's; ncnn is
    reported as refused."""
    pytest.importorskip('onnxruntime')
    model, _, _, _, config = detector
    ckpt = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    proc = subprocess.run([
        sys.executable, 'tools/deployment/deploy_accuracy.py', config, ckpt, '--backend',
        'onnxruntime', 'ncnn', '--runs', '1', '--out-dir', str(tmp_path / 'acc')
    ], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.split('|')[1:-1]]
        if line.startswith('| ') and len(cells) == 5 and cells[0] != 'runtime':
            rows[cells[0]] = cells[1:]
    assert set(rows) == {'mmdet predict (tools/test.py)', 'PyTorch', 'onnxruntime'}, proc.stderr
    reference = rows['mmdet predict (tools/test.py)']
    assert float(reference[0]) > 0.9 and float(reference[1]) > 0.9
    for name in ('PyTorch', 'onnxruntime'):
        box_ap, mask_ap, equal, ms = rows[name]
        assert abs(float(box_ap) - float(reference[0])) <= 0.005
        assert abs(float(mask_ap) - float(reference[1])) <= 0.005
        assert equal == '3 / 3' and float(ms) > 0
    assert '| runtime | coco/bbox_mAP | coco/segm_mAP | images equal to mmdet | ms |' in proc.stdout
    assert 'ncnn: FAILED ValueError: ncnn ' in proc.stderr


def test_deploy_refuses_an_example_of_another_shape(tmp_path):
    from vt_mm.deploy.pipeline import deploy
    with pytest.raises(ValueError, match=r'^example of shape \(1, 3, 8, 8\), the graph takes '
                                         r'\(1, 3, 64, 32\)$'):
        deploy(torch.nn.Conv2d(3, 4, 1), ['onnxruntime'], (64, 32), str(tmp_path), 'x',
               toolbox='mmseg', example=np.zeros((1, 3, 8, 8), np.float32))
    assert not os.listdir(tmp_path)
