# PyramidTNT-Ti, ImageNet-1k, at its native 192x192.
# Reported: 75.2 top-1, 10.58M params, 0.59 GMACs.
_base_ = ['./pyramid-tnt-s_8xb128_in1k.py']
img_size = 192
model = dict(
    backbone=dict(arch='tiny', img_size=img_size, drop_path_rate=0.0),
    head=dict(in_channels=320))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[128, 128, 128], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color={{_base_.bgr_mean}}, fill_std=[127.5, 127.5, 127.5]),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(img_size / 0.9), edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
