# The all-token segmentation model: VT-ResNet-50 backbone (stage 4 = 3 VT modules, dense output at
# stride 16) with the VT-FPN neck and the Semantic FPN head, on LIP at 473x473. Not a row of the
# paper; same training recipe as vtfpn_r50_8xb12-40k_lip-473x473.py. Start from an ImageNet
# VT-ResNet-50 checkpoint with init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.').
_base_ = ['./vtfpn_r50_8xb12-40k_lip-473x473.py']
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='VTResNet',
        depth=50,
        out_indices=(0, 1, 2, 3),
        out_type='featmap',
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False),
    # stage 4 keeps stride 16 (VT modules do not downsample) and 1024 channels
    neck=dict(in_channels=[256, 512, 1024, 1024]),
    decode_head=dict(in_index=[0, 1, 2, 3], feature_strides=[4, 8, 16, 16]))
