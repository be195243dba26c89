# Table 10 row R-101 FPN (reported 41.51 mIoU, 231 GFLOPs). As fpn_r50_8xb4-80k_coco-
# stuff164k-640x640.py, ResNet-101.
_base_ = ['./fpn_r50_8xb4-80k_coco-stuff164k-640x640.py']
model = dict(pretrained='open-mmlab://resnet101_v1c', backbone=dict(depth=101))
