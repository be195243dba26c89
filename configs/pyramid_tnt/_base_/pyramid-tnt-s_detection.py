# What every PyramidTNT-S detector config shares (the paper's detection setting). The names are
# distinct from mmdet's (model, optim_wrapper) because mmengine allows no key in two bases; the
# detector configs plug them in with {{_base_.ptnt_*}}.
_base_ = ['../../_base_/vt_mm_runtime.py']
# ImageNet weights converted with tools/model_converters/pyramid_tnt2mmpretrain.py
pretrained = 'checkpoints/pyramid-tnt-s_in1k.pth'
# PyramidTNT was trained with mean = std = 0.5
ptnt_data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])
# strides 4/8/16/32 through the paper's detection upsampling, like ResNet's C2-C5
ptnt_backbone = dict(
    _delete_=True,
    type='PyramidTNT',
    arch='small',
    out_indices=(0, 1, 2, 3),
    upsample=True,
    drop_path_rate=0.1,
    init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.'))
ptnt_out_channels = [128, 256, 512, 512]
# AdamW lr 1e-4, wd 0.05; no weight decay on position embeddings, biases and norms
ptnt_optim_wrapper = dict(
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
