# Mask R-CNN 1x with a PyramidTNT-S backbone, built on mmdet's own Mask R-CNN config: only the
# backbone, FPN input widths and optimiser change (./_base_/pyramid-tnt-s_detection.py; weights as
# in retinanet_pyramid-tnt-s_fpn_1x_coco.py).
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', './_base_/pyramid-tnt-s_detection.py']
model = dict(
    data_preprocessor={{_base_.ptnt_data_preprocessor}},
    backbone={{_base_.ptnt_backbone}},
    neck=dict(in_channels={{_base_.ptnt_out_channels}}))
optim_wrapper = {{_base_.ptnt_optim_wrapper}}
