"""VT-FPN as a drop-in neck in mmdet's RetinaNet, Mask R-CNN and Panoptic FPN configs."""
import numpy as np
import pytest
import torch
from det_helpers import coco_batch, loss_step  # noqa: E402
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import vt_mm  # noqa: F401
from vt_mm.datasets.demo_shapes import SHAPE_CLASSES, make_demo_coco

NUM = len(SHAPE_CLASSES)


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    make_demo_coco(str(root), 'train', num_images=2, size=(160, 128), seed=0)
    return str(root)


def _adapt_to_shapes(cfg):
    """Class counts for the generated data; no ImageNet weights offline. Nothing else changes."""
    cfg.model.backbone.init_cfg = None
    if 'bbox_head' in cfg.model:
        cfg.model.bbox_head.num_classes = NUM
    else:
        cfg.model.roi_head.bbox_head.num_classes = NUM
        cfg.model.roi_head.mask_head.num_classes = NUM
    if 'semantic_head' in cfg.model:
        # generated data: the shapes are things, the background is the one stuff class
        cfg.model.semantic_head.num_things_classes = NUM
        cfg.model.semantic_head.num_stuff_classes = 1
        cfg.model.panoptic_fusion_head.num_things_classes = NUM
        cfg.model.panoptic_fusion_head.num_stuff_classes = 1
        cfg.model.test_cfg.panoptic.stuff_area_limit = 16


def _semantic_map(sample):
    """Panoptic FPN's semantic target from the instance masks: things 0..N-1, stuff N."""
    h, w = sample.gt_instances.masks.masks.shape[1:] if len(sample.gt_instances) else \
        sample.metainfo['img_shape']
    seg = np.full((h, w), NUM, dtype=np.int64)
    for mask, label in zip(sample.gt_instances.masks.masks, sample.gt_instances.labels):
        seg[mask.astype(bool)] = int(label)
    sample.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(seg)[None])


@pytest.mark.parametrize('config,base_neck', [
    ('configs/vtfpn/retinanet_r50_vtfpn_1x_coco.py',
     dict(start_level=1, add_extra_convs='on_input', num_outs=5)),
    ('configs/vtfpn/mask-rcnn_r50_vtfpn_1x_coco.py', dict(start_level=0, num_outs=5)),
    ('configs/vtfpn/panoptic-fpn_r50_vtfpn_1x_coco.py', dict(start_level=0, num_outs=5)),
])
def test_detector_with_vtfpn_loss_and_predict(config, base_neck, coco):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = Config.fromfile(config)
    # the neck is the only change: every FPN argument comes from mmdet's base config
    assert cfg.model.neck.type == 'VTFPN'
    assert cfg.model.neck.in_channels == [256, 512, 1024, 2048]
    for key, value in base_neck.items():
        assert cfg.model.neck.get(key, 0) == value, key
    _adapt_to_shapes(cfg)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with_mask = 'roi_head' in cfg.model
    batch = coco_batch(coco, with_mask)
    if 'semantic_head' in cfg.model:
        for sample in batch['data_samples']:
            _semantic_map(sample)
    losses = loss_step(model, batch)
    # gradients reach the visual-token layers of the neck
    assert model.neck.transformer[0].key.weight.grad is not None
    assert model.neck.tokenizers[0].token_coef.weight.grad.abs().sum() > 0
    if with_mask:
        assert 'loss_mask' in losses
    if 'semantic_head' in cfg.model:
        assert 'loss_seg' in losses
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(batch, False), mode='predict')
    assert len(results) == 2
    if 'semantic_head' in cfg.model:
        assert results[0].pred_panoptic_seg.sem_seg.shape[-2:] == (128, 160)
    else:
        assert 'bboxes' in results[0].pred_instances
