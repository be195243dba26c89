# Table 10 row R-101 FPN (reported 41.51 mIoU, 231 GFLOPs). As fpn_coco-stuff164k.py, ResNet-101.
_base_ = ['./fpn_coco-stuff164k.py']
model = dict(pretrained='open-mmlab://resnet101_v1c', backbone=dict(depth=101))
