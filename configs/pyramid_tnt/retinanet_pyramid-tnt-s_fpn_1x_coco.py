# RetinaNet 1x with a PyramidTNT-S backbone (Han et al. 2022, Table 5: 42.0 AP, 57.7 AP_L),
# built on mmdet's own RetinaNet config: only the backbone, FPN input widths and optimiser change.
# The backbone upsamples its stages to strides 4/8/16/32 (the paper's detection variant), so the
# FPN takes stages 1-3 (strides 8-32) plus P6/P7 like ResNet's C3-C5. AdamW lr 1e-4, wd 0.05,
# 1333x800, no weight decay on position embeddings, biases and norms.
# ImageNet weights: convert the official checkpoint with
#   python tools/model_converters/pyramid_tnt2mmpretrain.py ptnt_s.pth checkpoints/pyramid-tnt-s_in1k.pth
# or train from scratch with --cfg-options model.backbone.init_cfg=None.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['vt_mm'], allow_failed_imports=False)
pretrained = 'checkpoints/pyramid-tnt-s_in1k.pth'
model = dict(
    # PyramidTNT was trained with mean = std = 0.5
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        _delete_=True,
        type='PyramidTNT',
        arch='small',
        out_indices=(0, 1, 2, 3),
        upsample=True,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 512]))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        custom_keys={
            'sentence_pos': dict(decay_mult=0.),
            'word_pos': dict(decay_mult=0.),
            'relative_pos': dict(decay_mult=0.),
        }))
