"""Shared by the export and deployment tests: small variants of the configs (a narrow Semantic
FPN + VT-FPN, PyramidTNT with one block per stage, the detectors) and BN with trained-like
statistics."""
import os.path as osp

from vt_mm.analysis import trained_like_bn  # noqa: F401 (shared with the benchmarks)

from . import ROOT

SMALL_SEMANTIC_VTFPN = """
_base_ = [{base!r}]
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(pretrained=None, backbone=dict(depth=18, norm_cfg=norm_cfg),
             neck=dict(in_channels=[64, 128, 256, 512], out_channels=32, token_channels=64),
             decode_head=dict(in_channels=[32, 32, 32, 32], channels=32, norm_cfg=norm_cfg))
"""


# Small variants (same code paths, fewer blocks or channels) keep the conversions quick: the
# TFLite converter's time grows with the number of ops.
SMALL_PYRAMID_TNT = dict(depths=[1, 1, 1, 1], dims=[80, 160, 320, 320], word_dims=[5, 10, 20, 20],
                         num_heads=[2, 4, 8, 8], word_heads=[1, 2, 4, 4], sr_ratios=[4, 2, 1, 1],
                         img_size=192)


SMALL_ARCH = dict(_delete_=True, **SMALL_PYRAMID_TNT)


def _small_rcnn(mask: bool) -> str:
    masks = ('mask_roi_extractor=dict(out_channels=64), '
             'mask_head=dict(in_channels=64, conv_out_channels=64)' if mask else
             'mask_roi_extractor=None, mask_head=None')
    return ('model = dict(backbone=dict(depth=18, init_cfg=None), neck=dict('
            'in_channels=[64, 128, 256, 512], out_channels=64, token_channels=64), '
            'rpn_head=dict(in_channels=64, feat_channels=64), roi_head=dict('
            'bbox_roi_extractor=dict(out_channels=64), bbox_head=dict(in_channels=64, '
            f'fc_out_channels=128), {masks}))\n')


SMALL_CONFIGS = {
    'vtfpn_small': ('vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py',
                    SMALL_SEMANTIC_VTFPN.split('\n', 2)[2]),
    'pyramid_tnt_small': ('pyramid_tnt/pyramid-tnt-ti_8xb128_in1k.py',
                          f'model = dict(backbone=dict(arch={SMALL_ARCH!r}))\n'),
    # the detection backbone with upsample=True and FPN (RetinaNet)
    'pyramid_tnt_det_small': ('pyramid_tnt/retinanet_pyramid-tnt-s_fpn_1x_coco.py',
                              f'model = dict(backbone=dict(arch={SMALL_ARCH!r}), '
                              'neck=dict(in_channels=[80, 160, 320, 320]))\n'),
    # VT-FPN as RetinaNet's neck (P3-P7, extra convs on the input), ResNet-18
    'retinanet_vtfpn_small': ('vtfpn/retinanet_r50_vtfpn_1x_coco.py',
                              "model = dict(backbone=dict(depth=18, init_cfg=None), neck=dict("
                              "in_channels=[64, 128, 256, 512], out_channels=64, "
                              "token_channels=64), bbox_head=dict(in_channels=64, "
                              "feat_channels=64))\n"),
    # PyramidTNT (one block per stage) in Mask R-CNN with mmdet's FPN
    'pyramid_tnt_mask_rcnn_small': ('pyramid_tnt/mask-rcnn_pyramid-tnt-s_fpn_1x_coco.py',
                                    f'model = dict(backbone=dict(arch={SMALL_ARCH!r}), '
                                    'neck=dict(in_channels=[80, 160, 320, 320]))\n'),
    # VT-FPN in Mask R-CNN, ResNet-18, 64 channels throughout
    'mask_rcnn_vtfpn_small': ('vtfpn/mask-rcnn_r50_vtfpn_1x_coco.py', _small_rcnn(mask=True)),
    # ... and without its mask head: Faster R-CNN
    'faster_rcnn_vtfpn_small': ('vtfpn/mask-rcnn_r50_vtfpn_1x_coco.py',
                                _small_rcnn(mask=False)),
}


def small_config(name: str, directory) -> str:
    """The path of the config ``name``: a small variant of :data:`SMALL_CONFIGS` written to
    ``directory`` (a pathlib folder), else the repository's ``configs/name``."""
    if name in SMALL_CONFIGS:
        base, body = SMALL_CONFIGS[name]
        path = directory / f'{name}.py'
        path.write_text(f"_base_ = [{osp.join(ROOT, 'configs', base)!r}]\n"
                        "norm_cfg = dict(type='BN', requires_grad=True)\n" + body)
        return str(path)
    return osp.join(ROOT, 'configs', name)
