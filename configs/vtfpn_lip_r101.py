# Semantic FPN with VT-FPN, ResNet-101, on LIP at 473x473. VT paper Table 9
# (reported: 47.58 mIoU, 43.6 GFLOPs, VT-FPN module 2.0 GFLOPs). Identical to vtfpn_lip.py but
# for the backbone depth.
_base_ = ['./vtfpn_lip.py']
model = dict(
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(depth=101))
