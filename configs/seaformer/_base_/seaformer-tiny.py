# SeaFormer-T + LightHead (official settings; 150 classes by default).
_base_ = ['../../_base_/vt_mm_runtime.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(type='SeaFormer', arch='tiny', drop_path_rate=0.1, norm_cfg=norm_cfg),
    decode_head=dict(
        type='LightHead',
        in_channels=[32, 128, 160],
        in_index=[0, 1, 2],
        channels=96,
        embed_dims=[64, 96],
        is_dw=True,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
