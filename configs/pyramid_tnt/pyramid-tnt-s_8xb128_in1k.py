# PyramidTNT-S on ImageNet-1k at its native 256x256, as the official training: AdamW lr 1e-3
# (batch 1024), wd 0.05, 300 epochs with 20 warm-up epochs then cosine, mean = std = 0.5
# normalisation, bicubic resizing. No weight decay on position embeddings, biases and norms.
# Reported: 82.0 top-1, 31.95M params, 3.28 GMACs (Han et al. 2022).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/vt_mm_runtime.py',
]
img_size = 256
model = dict(
    type='ImageClassifier',
    backbone=dict(type='PyramidTNT', arch='small', img_size=img_size, drop_path_rate=0.1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ],
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], to_rgb=True)
bgr_mean = [127.5, 127.5, 127.5]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[128, 128, 128], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=bgr_mean, fill_std=[127.5, 127.5, 127.5]),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # crop_pct 0.9 as the official eval: resize the short edge to size / 0.9, centre-crop size
    dict(type='ResizeEdge', scale=int(img_size / 0.9), edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'sentence_pos': dict(decay_mult=0.0),
        'word_pos': dict(decay_mult=0.0),
        'relative_pos': dict(decay_mult=0.0),
    }),
    clip_grad=dict(max_norm=5.0))
