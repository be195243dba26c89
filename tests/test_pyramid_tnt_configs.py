"""PyramidTNT configs: mmpretrain classifiers and mmdet detectors build and run."""
import pytest
import torch
from det_helpers import coco_batch, loss_step  # noqa: E402
from mmengine.config import Config
from mmengine.registry import init_default_scope

import vt_mm  # noqa: F401
from vt_mm.datasets.demo_shapes import SHAPE_CLASSES, make_demo_coco


@pytest.mark.parametrize('arch,params', [('ti', 10_578_529), ('s', 31_953_200), ('m', 84_943_572),
                                         ('b', 156_990_072)])
def test_imagenet_configs_build_the_official_classifier(arch, params):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(f'configs/pyramid_tnt/pyramid-tnt-{arch}_8xb128_in1k.py')
    assert cfg.data_preprocessor.mean == [127.5] * 3 and cfg.data_preprocessor.std == [127.5] * 3
    assert cfg.optim_wrapper.optimizer.type == 'AdamW' and cfg.optim_wrapper.optimizer.lr == 1e-3
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05 and cfg.train_cfg.max_epochs == 300
    assert cfg.param_scheduler[0].end == 20
    size = cfg.img_size
    assert cfg.test_pipeline[-2].crop_size == size and cfg.train_pipeline[1].scale == size
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == params
    if arch == 'ti':
        model.eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, size, size), mode='tensor').shape == (1, 1000)


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    make_demo_coco(str(root), 'train', num_images=2, size=(160, 128), seed=0)
    return str(root)


@pytest.mark.parametrize('config,with_mask', [
    ('configs/pyramid_tnt/retinanet_pyramid-tnt-s_fpn_1x_coco.py', False),
    ('configs/pyramid_tnt/mask-rcnn_pyramid-tnt-s_fpn_1x_coco.py', True),
])
def test_detector_loss_and_predict_on_generated_coco(config, with_mask, coco):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = Config.fromfile(config)
    assert cfg.model.backbone.type == 'PyramidTNT' and cfg.model.backbone.upsample
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.lr == 1e-4 and optimizer.weight_decay == 0.05
    assert cfg.train_pipeline[2].scale == (1333, 800)
    cfg.model.backbone.init_cfg = None  # no ImageNet weights offline
    if 'bbox_head' in cfg.model:
        cfg.model.bbox_head.num_classes = len(SHAPE_CLASSES)
    else:
        cfg.model.roi_head.bbox_head.num_classes = len(SHAPE_CLASSES)
        cfg.model.roi_head.mask_head.num_classes = len(SHAPE_CLASSES)
    model = MODELS.build(cfg.model)
    model.init_weights()
    batch = coco_batch(coco, with_mask)
    losses = loss_step(model, batch)
    assert model.backbone.stages[0].blocks[0].attn.q.weight.grad is not None
    if with_mask:
        assert 'loss_mask' in losses
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(batch, False), mode='predict')
    assert len(results) == 2 and 'bboxes' in results[0].pred_instances
