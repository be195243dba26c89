# The main job's demo: configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py (Semantic FPN, ResNet-50,
# VT-FPN) on the synthetic LIP-layout data of tools/dataset_converters/make_demo_lip.py (128x128
# figures), trained from scratch (no network, so no ImageNet weights) with a short CPU schedule
# and BN instead of SyncBN. Synthetic data: its mIoU shows that the pipeline learns, not how the
# model does on LIP.
_base_ = ['../vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py']
data_root = 'data/LIP_demo'
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg, dropout_ratio=0.0))
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
    batch_size=8,
    num_workers=2,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4))
# 700 iterations: the small parts (hat, sunglasses, glove, scarf: a few pixels at 128x128) need
# the longer schedule; about 10 minutes of training on 2 CPU cores.
max_iters = 700
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=50, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(by_epoch=False, interval=350, max_keep_ckpts=2))
# A fixed seed and deterministic algorithms: `make demo` repeats its result on the same machine.
randomness = dict(seed=0, deterministic=True)
