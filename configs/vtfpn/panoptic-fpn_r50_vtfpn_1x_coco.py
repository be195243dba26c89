# mmdet's own Panoptic FPN 1x config with VT-FPN in place of FPN; nothing else changes. VT-FPN reads
# the same neck arguments as FPN (in_channels, start_level, add_extra_convs, num_outs) from the
# base config and replaces FPN's 3x3 output convolutions with visual tokens (VTFPN defaults:
# 8 tokens x 1024 channels per level at out_channels 256, 16 heads, grouped projections, one
# shared transformer).
_base_ = ['mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py']
# What ../_base_/vt_mm_runtime.py declares, restated: mmdet's Panoptic FPN config sets
# custom_hooks = [] and mmengine allows no key in two bases (tests/test_configs.py checks that
# every vt-mm config carries the runtime base's import and hooks).
custom_imports = dict(imports=['vt_mm'], allow_failed_imports=False)
custom_hooks = [
    dict(type='ResumeRNGHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='RankConsistencyHook'),
    dict(type='CheckpointSafetyHook'),
    dict(type='NetworkCompileHook'),
]
model = dict(neck=dict(type='VTFPN'))
