# Table 10 row R-101 VT-FPN (reported 41.50 mIoU, 185 GFLOPs). As vtfpn_r50_8xb4-80k_coco-
# stuff164k-640x640.py, ResNet-101.
_base_ = ['./vtfpn_r50_8xb4-80k_coco-stuff164k-640x640.py']
model = dict(pretrained='open-mmlab://resnet101_v1c', backbone=dict(depth=101))
