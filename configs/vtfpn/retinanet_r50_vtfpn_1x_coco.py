# mmdet's own RetinaNet 1x config with VT-FPN in place of FPN; nothing else changes. VT-FPN reads
# the same neck arguments as FPN (in_channels, start_level, add_extra_convs, num_outs) from the
# base config and replaces FPN's 3x3 output convolutions with visual tokens (VTFPN defaults:
# 8 tokens x 1024 channels per level at out_channels 256, 16 heads, grouped projections, one
# shared transformer).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '../_base_/vt_mm_runtime.py']
model = dict(neck=dict(type='VTFPN'))
