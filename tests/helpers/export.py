"""Shared by the export and deployment tests: a narrow Semantic FPN + VT-FPN config and BN with
trained-like statistics."""
from vt_mm.analysis import trained_like_bn  # noqa: F401 (shared with the benchmarks)

SMALL_SEMANTIC_VTFPN = """
_base_ = [{base!r}]
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(pretrained=None, backbone=dict(depth=18, norm_cfg=norm_cfg),
             neck=dict(in_channels=[64, 128, 256, 512], out_channels=32, token_channels=64),
             decode_head=dict(in_channels=[32, 32, 32, 32], channels=32, norm_cfg=norm_cfg))
"""
