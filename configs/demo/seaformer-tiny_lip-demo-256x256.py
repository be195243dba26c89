# SeaFormer-T + LightHead on the synthetic LIP-layout demo data (make_demo_lip.py: 400 train / 50
# val figures, 20 classes), upsampled to 256x256 so that the 1/8 logits are 32x32 (so the
# pipelines are configs/demo/vtfpn_r50_lip-demo-128x128.py's at another crop size). From scratch
# (no ImageNet weights offline), BN instead of SyncBN, a short CPU schedule (~1000 iterations,
# about 10 minutes on 2 cores). It gives the deployment checks a model whose logits mean
# something (labels agreement, INT8 mIoU: docs/en/user_guides/deployment.md); its mIoU says
# nothing about LIP.
_base_ = [
    '../seaformer/_base_/seaformer-tiny.py',
    '../_base_/datasets/lip.py',
    'mmseg::_base_/default_runtime.py',
    # the authors' AdamW recipe (lr 5e-4, head lr x10, no decay on position embeddings and
    # norms), with a short schedule below
    '../seaformer/_base_/schedule_160k_adamw.py',
]
data_root = 'data/LIP_demo'
crop_size = (256, 256)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg, drop_path_rate=0.0),
    decode_head=dict(num_classes=20, norm_cfg=norm_cfg, dropout_ratio=0.0))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5, swap_seg_labels={{_base_.lip_flip_pairs}}),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=2, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
max_iters = 1000
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=50, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=500, max_keep_ckpts=2))
randomness = dict(seed=0, deterministic=True)
