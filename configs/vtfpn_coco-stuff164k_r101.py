# Table 10 row R-101 VT-FPN (reported 41.50 mIoU, 185 GFLOPs). As vtfpn_coco-stuff164k.py,
# ResNet-101.
_base_ = ['./vtfpn_coco-stuff164k.py']
model = dict(pretrained='open-mmlab://resnet101_v1c', backbone=dict(depth=101))
