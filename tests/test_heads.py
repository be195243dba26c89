"""The heads and small modules: DropoutLinearClsHead, SeaFormer's LightHead, the flip-swap TTA,
the label-swap table, TraceableGELU and tracing(): behaviour at training and at inference, and
their argument checks at the boundary."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vt_mm  # noqa: F401
from vt_mm.datasets.transforms import swap_label_lut
from vt_mm.models.heads import DropoutLinearClsHead, LightHead
from vt_mm.models.heads.light_head import HardSigmoidFusion
from vt_mm.models.layers import TraceableGELU, tracing


def _cls_head(rate=0.5):
    return DropoutLinearClsHead(dropout_rate=rate, num_classes=3, in_channels=8)


@pytest.mark.parametrize('rate', [0.0, 0.2, 0.999])
def test_dropout_rate_accepts_zero_to_below_one(rate):
    head = _cls_head(rate)
    assert head.dropout.p == rate


@pytest.mark.parametrize('rate', [1.0, -0.001, 1.5])
def test_dropout_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(ValueError, match=rf'^dropout_rate must be in \[0, 1\), got {rate}$'):
        _cls_head(rate)


def test_dropout_head_default_and_modes():
    assert DropoutLinearClsHead(num_classes=3, in_channels=8).dropout.p == 0.2
    torch.manual_seed(0)
    head = _cls_head(0.5)
    feats = (torch.randn(4, 8), torch.randn(4, 8))  # the last feature is classified
    head.eval()
    assert torch.equal(head.pre_logits(feats), feats[-1])
    assert torch.equal(head(feats), F.linear(feats[-1], head.fc.weight, head.fc.bias))
    head.train()
    dropped = head.pre_logits(feats)
    zeros = dropped == 0
    assert zeros.any() and not zeros.all()
    assert torch.allclose(dropped[~zeros], 2 * feats[-1][~zeros])


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


def test_swap_label_lut_maps_pairs_both_ways_and_keeps_the_rest():
    lut = swap_label_lut([[14, 15], (18, 19)])
    assert lut.dtype == np.int64 and len(lut) == 256
    assert (lut[14], lut[15], lut[18], lut[19]) == (15, 14, 19, 18)
    others = [i for i in range(256) if i not in (14, 15, 18, 19)]
    assert (lut[others] == others).all()
    assert len(swap_label_lut([], num_values=7)) == 7
    assert swap_label_lut([[0, 6]], num_values=7)[6] == 0


@pytest.mark.parametrize('pairs,message', [
    ([[1]], r'swap_pairs entries must be pairs of labels, got \[1\]'),
    ([[1, 2, 3]], r'swap_pairs entries must be pairs of labels, got \[1, 2, 3\]'),
    ([[1, 2], [2, 3]], r'label 2 appears in more than one swap pair'),
    ([[1, 2], [3, 1]], r'label 1 appears in more than one swap pair'),
    ([[4, 4]], r'label 4 appears in more than one swap pair')])
def test_swap_label_lut_refuses_bad_pairs(pairs, message):
    with pytest.raises(ValueError, match=message):
        swap_label_lut(pairs)


def test_flip_swap_tta_swaps_horizontal_flips_only():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from vt_mm.models.segmentors.flip_swap_tta import FlipSwapSegTTAModel

    class Identity(torch.nn.Module):
        pass

    def sample(flip, direction, values):
        meta = dict(flip=flip, img_path='x.jpg')
        if direction is not None:
            meta['flip_direction'] = direction
        s = SegDataSample(metainfo=meta)
        s.seg_logits = PixelData(data=torch.tensor(values, dtype=torch.float32).view(-1, 1, 1))
        return s

    tta = FlipSwapSegTTAModel.__new__(FlipSwapSegTTAModel)
    torch.nn.Module.__init__(tta)
    tta.swap_pairs, tta._lut = [[1, 2]], swap_label_lut([[1, 2]])
    merged = []
    import mmseg.models.segmentors.seg_tta as seg_tta
    original = seg_tta.SegTTAModel.merge_preds
    seg_tta.SegTTAModel.merge_preds = lambda self, lists: merged.append(lists) or lists
    try:
        views = [[sample(False, None, [0, 1, 2]), sample(True, 'horizontal', [0, 1, 2]),
                  sample(True, None, [0, 1, 2]), sample(True, 'vertical', [0, 1, 2])]]
        tta.merge_preds(views)
        got = [s.seg_logits.data.view(-1).tolist() for s in merged[0][0]]
        assert got == [[0, 1, 2], [0, 2, 1], [0, 2, 1], [0, 1, 2]]
        with pytest.raises(ValueError, match=r"swap_pairs \[\[1, 2\]\] name classes beyond the "
                           r"model's 2 output channels"):
            tta.merge_preds([[sample(True, 'horizontal', [0, 1])]])
        tta.merge_preds([[sample(True, 'horizontal', [0, 1, 2, 3])]])
        assert merged[-1][0][0].seg_logits.data.view(-1).tolist() == [0, 2, 1, 3]
    finally:
        seg_tta.SegTTAModel.merge_preds = original


def test_traceable_gelu_is_exact_gelu_eagerly_and_when_traced():
    x = torch.linspace(-12, 12, 241)
    gelu = TraceableGELU()
    assert torch.equal(gelu(x), F.gelu(x))
    traced = torch.jit.trace(gelu, x)
    graph = str(traced.graph)
    assert 'erf' in graph and 'gelu' not in graph
    assert torch.allclose(traced(x), F.gelu(x), atol=1e-6)
    tanh = TraceableGELU(approximate='tanh')
    traced_tanh = torch.jit.trace(tanh, x)
    assert 'gelu' in str(traced_tanh.graph)
    assert torch.equal(tanh(x), F.gelu(x, approximate='tanh'))


def test_tracing_is_true_only_while_tracing():
    assert tracing() is False
    seen = []

    def fn(x):
        seen.append(tracing())
        return x + 1

    torch.jit.trace(fn, torch.zeros(1), check_trace=False)
    assert seen == [True]
    assert tracing() is False


def test_light_head_layers_carry_the_heads_norm_and_activation():
    head = _light_head(in_channels=[8, 16, 24, 32], in_index=[0, 1, 2, 3], channels=14,
                       embed_dims=[10, 12, 14], act_cfg=dict(type='ReLU6'))
    for fusion in head.fusions:
        for proj in (fusion.local_proj, fusion.global_proj):
            assert proj.with_norm and isinstance(proj.norm, torch.nn.BatchNorm2d)
            assert not proj.with_activation
    assert head.fuse_conv.with_norm and isinstance(head.fuse_conv.activate, torch.nn.ReLU6)
    assert [f.local_proj.conv.out_channels for f in head.fusions] == [10, 12, 14]
    with pytest.raises(ValueError, match=r'^embed_dims\[-1\]=12 must equal channels=14$'):
        _light_head(in_channels=[8, 16, 24, 32], in_index=[0, 1, 2, 3], channels=14,
                    embed_dims=[10, 12, 12])


def test_flip_swap_tta_builds_from_a_config_and_keeps_unflipped_views():
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    module = dict(type='EncoderDecoder', data_preprocessor=dict(type='SegDataPreProcessor'),
                  backbone=dict(type='VTResNet', depth=18, out_indices=(3, )),
                  decode_head=dict(type='FCNHead', in_channels=256, channels=8, num_convs=1,
                                   num_classes=4, in_index=0))
    tta = MODELS.build(dict(type='FlipSwapSegTTAModel', module=module, swap_pairs=[(1, 2)]))
    assert tta.swap_pairs == [[1, 2]] and list(tta._lut[:4]) == [0, 2, 1, 3]
    views = []
    for meta in (dict(), dict(flip=False), dict(flip=True, flip_direction='vertical'),
                 dict(flip=True, flip_direction='horizontal')):
        sample = SegDataSample(metainfo=dict(meta, img_path='x.jpg'))
        logits = torch.zeros(4, 1, 1)
        logits[1] = 1.0  # class 1 in every view
        sample.seg_logits = PixelData(data=logits)
        views.append(sample)
    merged = []
    import mmseg.models.segmentors.seg_tta as seg_tta
    original = seg_tta.SegTTAModel.merge_preds
    seg_tta.SegTTAModel.merge_preds = lambda self, lists: merged.append(lists) or lists
    try:
        tta.merge_preds([views])
    finally:
        seg_tta.SegTTAModel.merge_preds = original
    # no flip key, no flip, a vertical flip: unchanged; the horizontal one after them: swapped
    assert [int(s.seg_logits.data.argmax()) for s in merged[0][0]] == [1, 1, 1, 2]
