# RetinaNet 1x with a PyramidTNT-S backbone (Han et al. 2022, Table 5: 42.0 AP, 57.7 AP_L),
# built on mmdet's own RetinaNet config: only the backbone, FPN input widths and optimiser change
# (./_base_/pyramid-tnt-s_detection.py). The FPN takes stages 1-3 (strides 8-32) plus P6/P7 as
# for ResNet's C3-C5. 1333x800 as mmdet's config.
# ImageNet weights: convert the official checkpoint with
#   python tools/model_converters/pyramid_tnt2mmpretrain.py ptnt_s.pth \
#       checkpoints/pyramid-tnt-s_in1k.pth
# or train from scratch with --cfg-options model.backbone.init_cfg=None.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_base_/pyramid-tnt-s_detection.py']
model = dict(
    data_preprocessor={{_base_.ptnt_data_preprocessor}},
    backbone={{_base_.ptnt_backbone}},
    neck=dict(in_channels={{_base_.ptnt_out_channels}}))
optim_wrapper = {{_base_.ptnt_optim_wrapper}}
