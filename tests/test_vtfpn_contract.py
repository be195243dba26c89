"""VT-FPN's contract, pinned down where a mutation run found bugs that passed the other tests
(issue "Tests that catch the bug", docs/testing.md): the default transformer settings, the
defaults of the FPN vocabulary, the extra levels computed by hand for every
``add_extra_convs`` mode, the top-down pathway on 2- and 3-level pyramids, and the exact values
of ``token_statistics``."""
import functools
import math
import re

import pytest
import torch
import torch.nn.functional as F
from test_vtfpn import IN_CHANNELS, _small_neck
from test_vtfpn import _features as vtfpn_features

import vt_mm  # noqa: F401
from vt_mm.models.necks import VTFPN

_features = functools.partial(vtfpn_features, seed=0)  # the same inputs in every run


def _neck(**kw):
    torch.manual_seed(0)
    neck = _small_neck(**kw)
    neck.init_weights()
    return neck.eval()


def test_default_transformer_is_the_pseudo_codes():
    """token_channels = 4 x out_channels; 16 heads and groups (or gcd with the widths); the
    transformer: keys/queries C_T/2 wide, K/Q/V grouped by gcd(8, C_T/2), with a value
    projection, one layer; a position encoding per level."""
    neck = VTFPN(IN_CHANNELS, 64, 4)
    assert neck.token_channels == 256
    (layer, ) = neck.transformer
    assert layer.num_heads == 16 and layer.qk_channels == 128
    assert layer.key.weight.shape == (128, 256 // 8, 1) and layer.key.groups == 8
    assert layer.query.groups == 8 and layer.value is not None and layer.value.groups == 8
    assert layer.value.weight.shape == (256, 256 // 8, 1) and layer.value.bias is not None
    for tok, proj in zip(neck.tokenizers, neck.projectors):
        assert tok.value.groups == 16 and tok.value.weight.shape == (256, 64 // 16, 1)
        assert tok.num_tokens == 8 and tok.token_channels == 256
        assert proj.num_heads == 16 and proj.query_groups == 16
    assert len(neck.pos_encodings) == 4
    # narrow widths: gcd(16, 24, 48) = 8 heads and groups; qkv groups gcd(8, 24) = 8
    narrow = VTFPN(IN_CHANNELS, 24, 4, token_channels=48)
    assert narrow.transformer[0].num_heads == 8 and narrow.projectors[0].query_groups == 8
    assert narrow.tokenizers[0].value.groups == 8 and narrow.transformer[0].key.groups == 8
    # C_T/2 = 18: heads gcd(16, 32, 36, 18) = 2 (the key width must split into the heads;
    # before, 4 heads from gcd(16, 32, 36) failed with 'qk_channels=18 must be divisible by 4')
    odd = VTFPN(IN_CHANNELS, 32, 4, token_channels=36)
    assert odd.transformer[0].key.groups == 2 and odd.transformer[0].num_heads == 2
    assert VTFPN(IN_CHANNELS, 32, 4, token_channels=48).transformer[0].num_heads == 8


def test_transformer_cfg_tokenizer_cfg_and_layer_count_pass_through():
    neck = VTFPN(IN_CHANNELS, 32, 4, token_channels=64, num_transformer_layers=2,
                 transformer_cfg=dict(with_value=False, qk_channels=16, ffn_channels=0),
                 with_pos_encoding=False, num_heads=4, groups=2)
    assert len(neck.transformer) == 2
    for layer in neck.transformer:
        assert layer.value is None and layer.qk_channels == 16 and layer.ffn is None
        assert layer.num_heads == 4
    assert neck.pos_encodings is None
    assert all(t.value.groups == 2 for t in neck.tokenizers)
    assert all(p.num_heads == 4 and p.query_groups == 2 for p in neck.projectors)
    none = VTFPN(IN_CHANNELS, 32, 4, token_channels=64, num_transformer_layers=0)
    tokens = [torch.randn(1, 64, 4)] * 2
    assert all(torch.equal(a, b) for a, b in zip(none.mix_tokens(tokens), tokens))


def test_fpn_vocabulary_defaults():
    """add_extra_convs=False (max-pool), norm on laterals when norm_cfg is given,
    zero_init_projection=False, relu_before_extra_convs=False, nearest top-down."""
    neck = VTFPN(IN_CHANNELS, 32, 5, token_channels=64, norm_cfg=dict(type='BN'))
    assert neck.add_extra_convs is False and len(neck.extra_convs) == 0
    assert all(conv.with_norm for conv in neck.lateral_convs)
    assert neck.relu_before_extra_convs is False and neck.upsample_cfg == dict(mode='nearest')
    neck.init_weights()
    assert all(p.value.weight.abs().sum() > 0 for p in neck.projectors)
    no_norm = VTFPN(IN_CHANNELS, 32, 4, token_channels=64, norm_cfg=dict(type='BN'),
                    no_norm_on_lateral=True)
    assert not any(conv.with_norm for conv in no_norm.lateral_convs)
    assert VTFPN(IN_CHANNELS, 32, 5, add_extra_convs=True).add_extra_convs == 'on_input'


@pytest.mark.parametrize('mode', ['on_input', 'on_lateral', 'on_output'])
@pytest.mark.parametrize('relu', [False, True])
def test_extra_levels_by_hand(mode, relu):
    """Two extra levels: the first a stride-2 3x3 conv on the last input, lateral or output
    (the input has the backbone's channels), the second on the first's output, after a ReLU
    with relu_before_extra_convs (mmdet's FPN)."""
    neck = _neck(num_outs=6, add_extra_convs=mode, relu_before_extra_convs=relu)
    first, second = neck.extra_convs
    assert first.conv.in_channels == (IN_CHANNELS[-1] if mode == 'on_input' else 32)
    assert first.conv.stride == (2, 2) and first.conv.kernel_size == (3, 3)
    assert second.conv.in_channels == 32 and first.conv.padding == (1, 1)
    feats = _features(64, 96)
    with torch.no_grad():
        outs = neck(feats)
        laterals = neck.lateral_features(feats)
        source = dict(on_input=feats[-1], on_lateral=laterals[-1], on_output=outs[3])[mode]
        p5 = first(source)
        p6 = second(F.relu(p5) if relu else p5)
    assert len(outs) == 6
    torch.testing.assert_close(outs[4], p5, rtol=0, atol=0)
    torch.testing.assert_close(outs[5], p6, rtol=0, atol=0)
    assert outs[4].shape[2:] == (1, 2) and outs[5].shape[2:] == (1, 1)


def test_max_pool_extra_levels_pool_the_last_output():
    neck = _neck(num_outs=6)
    with torch.no_grad():
        outs = neck(_features(64, 96))
    torch.testing.assert_close(outs[4], F.max_pool2d(outs[3], 1, stride=2), rtol=0, atol=0)
    torch.testing.assert_close(outs[5], F.max_pool2d(outs[4], 1, stride=2), rtol=0, atol=0)


@pytest.mark.parametrize('levels', [2, 3])
@pytest.mark.parametrize('hw', [(64, 64), (72, 104)])
def test_top_down_on_short_pyramids_is_fpns(levels, hw):
    """Laterals + top-down on 2- and 3-level pyramids (start_level / end_level), the fused
    fast path with non-zero biases against the sum written out."""
    in_channels = IN_CHANNELS[:levels]
    neck = _neck(in_channels=in_channels, num_outs=levels)
    for conv in neck.lateral_convs:
        torch.nn.init.normal_(conv.conv.bias)
    feats = _features(*hw, channels=in_channels)
    with torch.no_grad():
        got = neck.lateral_features(feats)
        plain = [conv.conv(x) for conv, x in zip(neck.lateral_convs, feats)]
        for i in range(levels - 1, 0, -1):
            plain[i - 1] = plain[i - 1] + F.interpolate(plain[i], size=plain[i - 1].shape[2:])
    assert neck._fused_laterals and len(got) == levels
    for g, p in zip(got, plain):
        torch.testing.assert_close(g, p, rtol=1e-5, atol=1e-5)
    sliced = _neck(start_level=1, end_level=2, num_outs=2)
    with torch.no_grad():
        outs = sliced(_features(*hw))
    assert [o.shape[1] for o in outs] == [32, 32]
    assert outs[0].shape[2:] == _features(*hw)[1].shape[2:]


def test_token_statistics_exact_values():
    """Uniform tokenizer attention (zero token coefficients) gives entropy 1 and peak 1, every
    token the same (similarity 1); zero projector values add nothing (ratio 0); random ones
    add the ratio of norms written out."""
    neck = _neck(num_transformer_layers=0, with_pos_encoding=False, zero_init_projection=True)
    for tok in neck.tokenizers:
        torch.nn.init.zeros_(tok.token_coef.weight)
        torch.nn.init.zeros_(tok.token_coef.bias)
    feats = _features(64, 64, n=2)
    with torch.no_grad():
        stats = neck.token_statistics(feats)
    assert len(stats) == 4
    for s in stats:
        assert s['attention_entropy'] == pytest.approx(1, abs=1e-6)
        assert s['attention_peak'] == pytest.approx(1, abs=1e-5)
        assert s['token_similarity'] == pytest.approx(1, abs=1e-5)
        assert s['projection_ratio'] == 0
        assert 0 <= s['projector_entropy'] <= 1 + 1e-6
    # projector values non-zero: the ratio is the added norm over the lateral's norm
    for p in neck.projectors:
        torch.nn.init.normal_(p.value.weight)
    with torch.no_grad():
        stats = neck.token_statistics(feats)
        laterals = neck.lateral_features(feats)
        tokens, _ = neck.tokenize(laterals)
        added = neck.projectors[1](laterals[1], tokens[1]) - laterals[1]
    expected = (added.flatten(1).norm(dim=1) / laterals[1].flatten(1).norm(dim=1)).mean()
    assert stats[1]['projection_ratio'] == pytest.approx(float(expected), rel=1e-5)
    assert stats[1]['projection_ratio'] > 0


def test_token_statistics_keys_ranges_and_a_single_token():
    neck = _neck(num_transformer_layers=0, with_pos_encoding=False)
    stats_keys = {'attention_entropy', 'attention_peak', 'token_similarity',
                  'projector_entropy', 'projection_ratio'}
    with torch.no_grad():
        stats = neck.token_statistics(_features(64, 64))
    assert all(set(s) == stats_keys for s in stats)
    assert all(-1 <= s['token_similarity'] <= 1 for s in stats)
    # normalised entropy of L=1 tokens is defined as 1 (no choice)
    single = _neck(num_tokens=1, num_transformer_layers=0)
    with torch.no_grad():
        assert single.token_statistics(_features(64, 64))[0]['projector_entropy'] == 1.0
    assert math.isfinite(stats[0]['attention_peak'])


def _top_down(neck, feats, **interpolate):
    plain = [conv.conv(x) for conv, x in zip(neck.lateral_convs, feats)]
    for i in range(len(plain) - 1, 0, -1):
        size = None if 'scale_factor' in interpolate else plain[i - 1].shape[2:]
        plain[i - 1] = plain[i - 1] + F.interpolate(plain[i], size=size, **interpolate)
    return plain


@pytest.mark.parametrize('upsample_cfg', [dict(scale_factor=2, mode='nearest'),
                                          dict(mode='bilinear', align_corners=False)])
def test_upsample_cfg_reaches_the_top_down_pathway(upsample_cfg):
    """mmdet FPN's upsample_cfg: by scale factor, or by size with another mode (bilinear is
    not nearest: the nearest fast path must not take it)."""
    neck = _neck(upsample_cfg=upsample_cfg)
    for conv in neck.lateral_convs:
        torch.nn.init.normal_(conv.conv.bias)
    feats = _features(64, 64)
    with torch.no_grad():
        got = neck.lateral_features(feats)
        expected = _top_down(neck, feats, **upsample_cfg)
        nearest = _top_down(neck, feats, mode='nearest')
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    if upsample_cfg['mode'] == 'bilinear':
        assert not torch.allclose(got[0], nearest[0], atol=1e-3)


def test_top_down_size_mismatch_names_the_sizes_and_the_fix():
    neck = _neck(upsample_cfg=dict(scale_factor=2, mode='nearest'))
    with pytest.raises(ValueError, match=(
            r'upsampled a \(3, 3\) map to \(6, 6\), but the finer level is \(5, 5\); with '
            r"upsample_cfg=\{'scale_factor': 2, 'mode': 'nearest'\} the input size must be "
            'divisible by the largest stride')):
        neck.lateral_features(_features(72, 72))  # levels 18, 9, 5, 3


def test_top_down_with_normed_laterals_is_fpns():
    """Laterals with BN (not fusable: the plain path) against ConvModule + the sum written out
    (a minus for the plus in the plain path's loop passed every other test)."""
    neck = _neck(norm_cfg=dict(type='BN'))
    assert not neck._fused_laterals
    gen = torch.Generator().manual_seed(1)
    for conv in neck.lateral_convs:
        conv.bn.running_mean.copy_(torch.randn(32, generator=gen))
        conv.bn.running_var.copy_(torch.rand(32, generator=gen) + 0.5)
    feats = _features(72, 104)
    with torch.no_grad():
        got = neck.lateral_features(feats)
        plain = [conv(x) for conv, x in zip(neck.lateral_convs, feats)]
        for i in range(3, 0, -1):
            plain[i - 1] = plain[i - 1] + F.interpolate(plain[i], size=plain[i - 1].shape[2:])
    for g, p in zip(got, plain):
        torch.testing.assert_close(g, p, rtol=1e-5, atol=1e-5)


def _token_path(neck, feats):
    """token_statistics and, beside it, the intermediate maps it is defined on."""
    with torch.no_grad():
        stats = neck.token_statistics(feats)
        laterals = neck.lateral_features(feats)
        tokens, attns = neck.tokenize(laterals)
        return stats, laterals, tokens, attns, neck.mix_tokens(tokens)


def test_token_statistics_match_their_definitions():
    """Each statistic recomputed from its docstring on a random neck with 2 tokens per level
    (where a 2-way entropy must not be taken for the single-token case)."""
    neck = _neck(num_tokens=2)
    feats = _features(64, 64, n=2)
    stats, laterals, tokens, attns, mixed = _token_path(neck, feats)
    for level, s in enumerate(stats):
        p = attns[level].flatten(2)  # N, L, HW
        hw = p.shape[-1]
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean() / math.log(hw)
        assert s['attention_entropy'] == pytest.approx(float(entropy), rel=1e-5)
        assert s['attention_peak'] == pytest.approx(float((p.max(-1).values * hw).mean()),
                                                    rel=1e-5)
        tok = tokens[level]  # N, C, 2
        cosine = F.cosine_similarity(tok[:, :, 0], tok[:, :, 1], dim=1).mean()
        assert s['token_similarity'] == pytest.approx(float(cosine), rel=1e-4, abs=1e-6)
        with torch.no_grad():
            q = neck.projectors[level].attention(laterals[level], mixed[level])
        two_way = -(q * q.clamp_min(1e-12).log()).sum(-1).mean() / math.log(2)
        assert q.shape[-1] == 2 and float(two_way) < 1 - 1e-4
        assert s['projector_entropy'] == pytest.approx(float(two_way), rel=1e-5)


# -- survivors of the third mutation run (docs/testing.md): what no test read ------------------

def test_plain_1x1_recognises_only_a_plain_pointwise_conv():
    """The fused-lateral fast path runs ``W x`` as a matrix product; that is the convolution
    only for a plain 1x1 nn.Conv2d (stride 1, no padding or dilation, one group, conv first,
    no spectral norm)."""
    from mmcv.cnn import ConvModule

    from vt_mm.models.necks.vt_fpn import _plain_1x1
    assert _plain_1x1(ConvModule(8, 4, 1))
    assert _plain_1x1(ConvModule(8, 4, 1, norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU')))
    not_plain = [ConvModule(8, 4, 3), ConvModule(8, 4, 1, stride=2), ConvModule(8, 4, 1, padding=1),
                 ConvModule(8, 4, 1, dilation=2), ConvModule(8, 4, 1, groups=2),
                 ConvModule(8, 4, 1, conv_cfg=dict(type='ConvWS')),  # a Conv2d subclass
                 ConvModule(8, 8, 1, norm_cfg=dict(type='BN'), order=('norm', 'conv', 'act')),
                 ConvModule(8, 4, 1, with_spectral_norm=True)]
    for module in not_plain:
        assert not _plain_1x1(module), module


def test_conv_module_1x1_is_the_module_with_norm_activation_and_otherwise():
    from mmcv.cnn import ConvModule

    from vt_mm.models.necks.vt_fpn import _conv_module_1x1
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 7)
    for module in (ConvModule(8, 4, 1, norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU')),
                   ConvModule(8, 4, 3, padding=1),
                   ConvModule(8, 4, 1, conv_cfg=dict(type='ConvWS'))):
        module.eval()
        if module.with_norm:
            module.norm.running_mean.uniform_(-1, 1)
            module.norm.running_var.uniform_(0.5, 2)
        with torch.no_grad():
            torch.testing.assert_close(_conv_module_1x1(module, x), module(x))


def test_weight_standardised_laterals_are_not_run_as_plain_products():
    """conv_cfg=dict(type='ConvWS') standardises the weights in its forward: the neck's
    laterals must be the modules' own outputs, not W x with the raw weights."""
    neck = _neck(conv_cfg=dict(type='ConvWS'))
    feats = _features(32, 32)
    with torch.no_grad():
        laterals = neck.lateral_features(feats)
        want = [conv(x) for conv, x in zip(neck.lateral_convs, feats)]
        for i in range(len(want) - 1, 0, -1):
            want[i - 1] = want[i - 1] + F.interpolate(want[i], size=want[i - 1].shape[2:])
    for got, exp in zip(laterals, want):
        torch.testing.assert_close(got, exp)


def test_wrong_number_of_inputs_names_the_fix():
    neck = _neck()
    with pytest.raises(ValueError, match=r"VTFPN was built for 4 inputs .* but got 3 feature "
                                         r"maps; check the backbone's out_indices"):
        neck(_features(32, 32)[:3])


def test_extra_convs_without_extra_levels():
    """add_extra_convs with num_outs equal to the levels used: no extra level, no extra conv."""
    neck = _neck(add_extra_convs='on_input')
    assert len(neck.extra_convs) == 0
    with torch.no_grad():
        outs = neck(_features(32, 32))
    assert len(outs) == 4


def test_init_cfg_reaches_the_base_module():
    neck = _small_neck(init_cfg=dict(type='Constant', val=0.5, layer='Conv2d'))
    neck.init_weights()
    assert torch.all(neck.lateral_convs[0].conv.weight == 0.5)


def test_in_channels_must_be_a_non_empty_list():
    for bad in ([], 16, None):
        with pytest.raises(ValueError, match=r'in_channels must be a non-empty list of ints, '
                                             f'got {re.escape(repr(bad))}'):
            VTFPN(bad, 32, 4)


def test_level_range_arguments():
    """end_level: -1 or the last index mean "to the last level" (extra outputs allowed, as in
    mmdet's FPN); start_level > 0 uses fewer levels; the errors say what does not fit."""
    last = VTFPN(IN_CHANNELS, 32, 5, end_level=3)
    assert last.backbone_end_level == 4 and last.out_channels == 32
    assert VTFPN(IN_CHANNELS, 32, 3, start_level=1).backbone_end_level == 4
    with pytest.raises(ValueError, match=r'VTFPN: end_level must be an integer >= -1'):
        VTFPN(IN_CHANNELS, 32, 4, end_level=-2)
    with pytest.raises(ValueError, match=r'num_outs=2 is smaller than the 3 levels used '
                                         r'\(in_channels=\[16, 32, 64, 128\], start_level=1\)'):
        VTFPN(IN_CHANNELS, 32, 2, start_level=1)
    with pytest.raises(ValueError, match=r'end_level=2 does not fit in_channels=\[16, 32, 64, '
                                         r'128\] and num_outs=4'):
        VTFPN(IN_CHANNELS, 32, 4, end_level=2)


def test_projection_ratio_of_a_faint_map_is_not_clamped():
    """projection_ratio divides by the lateral's norm, clamped only against zero: a map with
    a norm below 1 keeps its ratio."""
    neck = _neck()
    for p in neck.parameters():
        p.data.mul_(1e-3)
    feats = [f * 1e-3 for f in _features(32, 32)]
    stats, laterals, _, _, mixed = _token_path(neck, feats)
    for level, s in enumerate(stats):
        x = laterals[level]
        assert float(x.flatten(1).norm(dim=1).max()) < 1
        with torch.no_grad():
            added = neck.projectors[level](x, mixed[level]) - x
        ratio = (added.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).mean()
        assert s['projection_ratio'] == pytest.approx(float(ratio), rel=1e-4)


def test_conv_norm_and_act_cfgs_reach_laterals_and_extra_convs():
    """conv_cfg / norm_cfg / act_cfg build every lateral and extra conv, as in mmdet's FPN."""
    from mmcv.cnn.bricks.conv_ws import ConvWS2d
    neck = VTFPN(IN_CHANNELS, 32, 6, add_extra_convs='on_input', conv_cfg=dict(type='ConvWS'),
                 norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'))
    assert len(neck.extra_convs) == 2
    for module in list(neck.lateral_convs) + list(neck.extra_convs):
        assert isinstance(module.conv, ConvWS2d), module
        assert module.with_norm and isinstance(module.activate, torch.nn.ReLU), module
    bare = VTFPN(IN_CHANNELS, 32, 5, add_extra_convs='on_input', norm_cfg=dict(type='BN'),
                 no_norm_on_lateral=True)
    assert not any(m.with_norm for m in bare.lateral_convs) and bare.extra_convs[0].with_norm


def test_start_level_skips_the_finest_inputs():
    neck = _neck(num_outs=3, start_level=1)
    assert neck.start_level == 1 and neck.end_level == -1
    assert [m.conv.in_channels for m in neck.lateral_convs] == IN_CHANNELS[1:]
    feats = _features(64, 64)
    with torch.no_grad():
        outs = neck(feats)
    assert [o.shape[2:] for o in outs] == [f.shape[2:] for f in feats[1:]]


@pytest.mark.parametrize('kw, message', [
    (dict(end_level=4, num_outs=5), r'end_level=4 does not fit in_channels=\[16, 32, 64, 128\] '
                                    r'and num_outs=5'),
    (dict(start_level=4, num_outs=4), 'start_level=4 is out of range for 4 inputs'),
    (dict(add_extra_convs='on_top'), r"add_extra_convs must be False, True, 'on_input', "
                                     r"'on_lateral' or 'on_output', got 'on_top'"),
    (dict(num_heads=3), r'VTFPN: num_heads=3 must divide out_channels=32; choose num_heads '
                        r'among the divisors of out_channels \(e\.g\. 8 or 16 for widths that '
                        r'are multiples of 16\)'),
    (dict(groups=3), r'VTFPN: groups=3 must divide out_channels=32; choose groups among the '
                     r'divisors of out_channels'),
    (dict(out_channels=48, token_channels=40, num_heads=16, groups=8),
     r'VTFPN: num_heads=16 must divide token_channels=40; choose num_heads among the divisors '
     r'of token_channels'),
    (dict(out_channels=48, token_channels=40, num_heads=8, groups=16),
     r'VTFPN: groups=16 must divide token_channels=40; choose groups among the divisors of '
     r'token_channels'),
])
def test_structure_errors_say_what_does_not_fit(kw, message):
    args = dict(in_channels=IN_CHANNELS, out_channels=32, num_outs=4)
    args.update(kw)
    with pytest.raises(ValueError, match=message):
        VTFPN(**args)


def test_one_head_and_one_group_are_valid():
    """The first-round setting (dense projections, one head) still builds."""
    neck = VTFPN(IN_CHANNELS, 32, 4, num_heads=1, groups=1)
    assert neck.transformer[0].num_heads == 1 and neck.tokenizers[0].value.groups == 1
