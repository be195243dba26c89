# Mask R-CNN 1x with a PyramidTNT-S backbone, built on mmdet's own Mask R-CNN config: only the
# backbone, FPN input widths and optimiser change (see retinanet_pyramid-tnt-s_fpn_1x_coco.py).
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['vt_mm'], allow_failed_imports=False)
pretrained = 'checkpoints/pyramid-tnt-s_in1k.pth'
model = dict(
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
