# Table 9 row R-101 FPN (reported 47.35 mIoU, 54.4 GFLOPs). As fpn_r50_8xb12-40k_lip-473x473.py,
# ResNet-101.
_base_ = ['./fpn_r50_8xb12-40k_lip-473x473.py']
model = dict(pretrained='open-mmlab://resnet101_v1c', backbone=dict(depth=101))
