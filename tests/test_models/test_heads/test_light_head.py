"""SeaFormer's LightHead: the fusion order, widths, norms and activations, argument checks,
folding."""
import pytest
import torch
import torch.nn.functional as F

from vt_mm.models.heads import LightHead
from vt_mm.models.heads.light_head import HardSigmoidFusion


def _light_head(**kw):
    args = dict(in_channels=[8, 16, 24], in_index=[0, 1, 2], channels=12, embed_dims=[10, 12],
                num_classes=5, norm_cfg=dict(type='BN'), dropout_ratio=0.1)
    args.update(kw)
    return LightHead(**args)


def test_light_head_fuses_from_the_finest_map_and_outputs_at_its_size():
    head = _light_head().eval()
    feats = [torch.randn(2, 8, 16, 12), torch.randn(2, 16, 8, 6), torch.randn(2, 24, 4, 3)]
    out = head(feats)
    assert out.shape == (2, 5, 16, 12)
    # written out: fusion 0 (detail = finest map, deep = second), fusion 1 (deep = third)
    x = feats[0]
    for fusion, deep in zip(head.fusions, feats[1:]):
        gate = F.interpolate(F.hardsigmoid(fusion.global_proj(deep)), size=x.shape[2:],
                             mode='bilinear', align_corners=False)
        x = fusion.local_proj(x) * gate
    expected = head.conv_seg(head.fuse_conv(x))
    assert torch.allclose(out, expected, atol=1e-6)
    first, second = head(feats), head(feats)
    assert torch.equal(first, second)  # deterministic at inference
    head.train()
    assert not torch.equal(head(feats), head(feats))  # dropout before the classifier


def test_light_head_widths_and_depthwise_fuse_conv():
    head = _light_head()
    assert [f.local_proj.conv.in_channels for f in head.fusions] == [8, 10]
    assert [f.global_proj.conv.in_channels for f in head.fusions] == [16, 24]
    assert [f.local_proj.conv.out_channels for f in head.fusions] == [10, 12]
    assert head.fuse_conv.conv.groups == 12 and head.embed_dims == [10, 12]
    assert _light_head(is_dw=False).fuse_conv.conv.groups == 1
    assert head.input_transform == 'multiple_select'
    assert head.fuse_conv.with_activation and not head.fusions[0].local_proj.with_activation
    assert not head.fusions[0].global_proj.with_activation


def test_light_head_argument_errors():
    with pytest.raises(ValueError, match=r'^LightHead needs one more input than embed_dims: '
                       r'in_channels=\[8, 16\], embed_dims=\[10, 12\]$'):
        _light_head(in_channels=[8, 16], in_index=[0, 1])
    with pytest.raises(ValueError, match=r'^embed_dims\[-1\]=10 must equal channels=12$'):
        _light_head(embed_dims=[12, 10])


def test_hard_sigmoid_is_taken_before_the_upsampling():
    fusion = HardSigmoidFusion(4, 6, 5, dict(type='BN')).eval()
    detail, deep = torch.randn(1, 4, 8, 8), 4 * torch.randn(1, 6, 2, 2)
    got = fusion(detail, deep)
    after = fusion.local_proj(detail) * F.hardsigmoid(F.interpolate(
        fusion.global_proj(deep), size=(8, 8), mode='bilinear', align_corners=False))
    before = fusion.local_proj(detail) * F.interpolate(
        F.hardsigmoid(fusion.global_proj(deep)), size=(8, 8), mode='bilinear',
        align_corners=False)
    assert torch.allclose(got, before) and not torch.allclose(got, after)


def test_light_head_deploy_folds_and_keeps_outputs():
    head = _light_head().eval()
    for m in head.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    feats = [torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4), torch.randn(1, 24, 2, 2)]
    expected = head(feats)
    head.switch_to_deploy()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in head.modules())
    assert torch.allclose(head(feats), expected, atol=1e-5)


def test_light_head_layers_carry_the_heads_norm_and_activation():
    head = _light_head(in_channels=[8, 16, 24, 32], in_index=[0, 1, 2, 3], channels=14,
                       embed_dims=[10, 12, 14], act_cfg=dict(type='ReLU6'))
    for fusion in head.fusions:
        for proj in (fusion.local_proj, fusion.global_proj):
            assert proj.with_norm and isinstance(proj.norm, torch.nn.BatchNorm2d)
            assert not proj.with_activation
    assert head.fuse_conv.with_norm and isinstance(head.fuse_conv.activate, torch.nn.ReLU6)
    assert [f.local_proj.conv.out_channels for f in head.fusions] == [10, 12, 14]
    # every entry differs, so the message shows the last one, not another
    with pytest.raises(ValueError, match=r'^embed_dims\[-1\]=13 must equal channels=14$'):
        _light_head(in_channels=[8, 16, 24, 32], in_index=[0, 1, 2, 3], channels=14,
                    embed_dims=[10, 12, 13])
