# Table 9 row R-101 FPN (reported 47.35 mIoU, 54.4 GFLOPs). As fpn_lip.py, ResNet-101.
_base_ = ['./fpn_lip.py']
model = dict(pretrained='open-mmlab://resnet101_v1c', backbone=dict(depth=101))
