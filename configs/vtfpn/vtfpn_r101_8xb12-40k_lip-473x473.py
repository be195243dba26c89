# Semantic FPN with VT-FPN, ResNet-101, on LIP at 473x473. VT paper Table 9 (reported: 47.58 mIoU,
# 43.6 GFLOPs, VT-FPN module 2.0 GFLOPs). Identical to vtfpn_r50_8xb12-40k_lip-473x473.py but for
# the backbone depth.
_base_ = ['./vtfpn_r50_8xb12-40k_lip-473x473.py']
model = dict(
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(depth=101))
