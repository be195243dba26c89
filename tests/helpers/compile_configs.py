"""One small training config per family for the torch.compile checks (tests and
``benchmarks/compile_benchmark.py``), and a graph-break count for a config's model.

The configs inherit the families' own configs (VT-FPN:
``configs/demo/vtfpn_r50_lip-demo-128x128.py``,
SeaFormer-T: ``configs/demo/seaformer-tiny_lip-demo-256x256.py``, PyramidTNT-Ti and
VT-ResNet-18: their ImageNet configs) and only shrink data, widths and schedules, so a compiled
run goes through the optimizers, hooks and paramwise settings that users get.
"""
import os
import os.path as osp
from typing import List, Tuple

from vt_mm.utils.config_scope import configs_root

_COMMON = """
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2, val_interval=100)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1000))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
randomness = dict(seed=0)
"""

_SEGMENTATION = """
_base_ = [{base!r}]
data_root = {root!r}
crop_size = ({size}, {size})
model = dict(data_preprocessor=dict(size=crop_size){model})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size={batch}, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
"""

_CLASSIFICATION = """
_base_ = [{base!r}]
data_root = {root!r}
model = dict({model})
pipeline = [dict(type='LoadImageFromFile'), dict(type='CenterCrop', crop_size={size}),
            dict(type='PackInputs')]
train_dataloader = dict(batch_size={batch}, num_workers=0, persistent_workers=False,
                        sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                                     data_prefix='train', pipeline=pipeline))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                                   data_prefix='train', pipeline=pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-3))  # the ImageNet rates diverge at batch 2
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
"""

# family: (template, config it inherits, model overrides); 'mmseg_fpn' is mmseg's own Semantic FPN
# (its models/fpn_r50.py, ResNet-18 here), the reference for what is mmengine's or torch's doing
FAMILY_CONFIGS = {
    'vtfpn': (_SEGMENTATION, 'demo/vtfpn_r50_lip-demo-128x128.py',
              ", backbone=dict(depth=18), neck=dict(in_channels=[64, 128, 256, 512], "
              "token_channels=64)"),
    'seaformer': (_SEGMENTATION, 'demo/seaformer-tiny_lip-demo-256x256.py', ''),
    'pyramid_tnt': (_CLASSIFICATION, 'pyramid_tnt/pyramid-tnt-ti_8xb128_in1k.py',
                    "backbone=dict(img_size={size}), head=dict(num_classes=3), "
                    "data_preprocessor=dict(num_classes=3)"),
    'vt_resnet': (_CLASSIFICATION, 'vt_resnet/vt-resnet18_8xb32_in1k.py',
                  "head=dict(num_classes=3), data_preprocessor=dict(num_classes=3)"),
}
REFERENCE_CONFIGS = {
    'mmseg_fpn': (_SEGMENTATION, 'vtfpn/fpn_r50_8xb12-40k_lip-473x473.py',
                  ", pretrained=None, backbone=dict(depth=18, norm_cfg=dict(type='BN')), "
                  "neck=dict(in_channels=[64, 128, 256, 512]), "
                  "decode_head=dict(norm_cfg=dict(type='BN'))"),
}


def write_family_config(family: str, directory: str, size: int = 64, batch: int = 2) -> str:
    """Generates the family's small data under ``directory`` and writes its config there
    (``size`` x ``size`` crops, ``batch`` images per iteration); returns the config's path."""
    from vt_mm.datasets import make_demo_lip
    from vt_mm.datasets.demo_shapes import make_demo_imagefolder
    template, base, model = {**FAMILY_CONFIGS, **REFERENCE_CONFIGS}[family]
    data = osp.join(directory, 'data')
    if template is _SEGMENTATION:
        make_demo_lip(data, num_train=max(4, batch), num_val=2, size=size + 16, seed=0)
    else:
        make_demo_imagefolder(data, 'train', per_class=max(2, batch), size=size + 8, seed=0)
    os.makedirs(directory, exist_ok=True)
    path = osp.join(directory, f'{family}_compile.py')
    with open(path, 'w') as f:
        model = model.replace('{size}', str(size))
        f.write(template.format(base=osp.join(configs_root(), base), root=data, model=model,
                                size=size, batch=batch) + _COMMON)
    return path


def count_graph_breaks(cfg, batch: int = 2, size: int = 64) -> Tuple[int, List[str]]:
    """``torch._dynamo.explain`` of the config's model in training mode on a random batch
    (``mode='tensor'``: backbone, neck and head): (number of graph breaks, their reasons)."""
    import torch
    import torch._dynamo as dynamo
    from mmengine.registry import MODELS

    model = MODELS.build(cfg.model).train()
    inputs = torch.randn(batch, 3, size, size)
    dynamo.reset()
    explanation = dynamo.explain(model)(inputs, mode='tensor')
    dynamo.reset()
    return explanation.graph_break_count, [b.reason for b in explanation.break_reasons]
