"""VT-FPN neck: shapes for any input size, FPN vocabulary, registration, errors, FLOPs."""
import pytest
import torch

import vt_mm  # noqa: F401
from vt_mm.models.necks import VTFPN

IN_CHANNELS = [16, 32, 64, 128]


def _features(h, w, channels=IN_CHANNELS, n=1, seed=None):
    # ResNet-style strides 4..32 with ceil rounding, as a ResNet produces for odd sizes;
    # seed: a generator of its own (None: the global one)
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    feats = []
    fh, fw = -(-h // 4), -(-w // 4)
    for c in channels:
        feats.append(torch.randn(n, c, fh, fw, generator=gen))
        fh, fw = -(-fh // 2), -(-fw // 2)
    return feats


def _small_neck(**kw):
    args = dict(in_channels=IN_CHANNELS, out_channels=32, num_outs=4, num_tokens=4,
                token_channels=64)
    args.update(kw)
    return VTFPN(**args)


@pytest.mark.parametrize('hw', [(64, 64), (473, 473), (97, 131), (33, 65)])
def test_output_shapes_follow_inputs(hw):
    neck = _small_neck().eval()
    feats = _features(*hw, n=2)
    outs = neck(feats)
    assert len(outs) == 4
    for f, o in zip(feats, outs):
        assert o.shape == (2, 32, f.shape[2], f.shape[3])


def test_tokens_of_all_levels_interact_in_one_transformer():
    """Changing only the coarsest level's tokens changes the finest level's mixed tokens."""
    neck = _small_neck().eval()
    laterals = [torch.randn(1, 32, s, s) for s in (16, 8, 4, 2)]
    tokens, attns = neck.tokenize(laterals)
    assert [t.shape for t in tokens] == [(1, 64, 4)] * 4
    assert [a.shape[2:] for a in attns] == [(s, s) for s in (16, 8, 4, 2)]
    mixed = neck.transformer(torch.cat(tokens, 2))
    tokens[3] = torch.randn_like(tokens[3])
    mixed2 = neck.transformer(torch.cat(tokens, 2))
    assert not torch.allclose(mixed[:, :, :4], mixed2[:, :, :4])
    assert len(neck.transformer) == 1 and len(neck.projectors) == 4


def test_extra_levels_like_mmdet_fpn():
    feats = _features(128, 96)
    outs = _small_neck(num_outs=5)(feats)  # max-pool extra level
    assert len(outs) == 5 and outs[4].shape[2:] == (2, 2)
    neck = _small_neck(in_channels=IN_CHANNELS[1:], start_level=0, num_outs=5,
                       add_extra_convs='on_input')
    outs = neck(feats[1:])  # RetinaNet style: C3-C5 -> P3-P7
    assert len(outs) == 5
    assert neck.extra_convs[0].conv.in_channels == IN_CHANNELS[-1]
    assert [o.shape[2] for o in outs] == [16, 8, 4, 2, 1]
    neck = _small_neck(start_level=1, num_outs=5, add_extra_convs='on_output')
    outs = neck(feats)
    assert len(outs) == 5 and outs[0].shape[2:] == feats[1].shape[2:]


def test_in_channels_mismatch_is_clear():
    neck = _small_neck()
    feats = _features(64, 64, channels=[16, 32, 64, 256])
    with pytest.raises(ValueError, match=r'expected \[16, 32, 64, 128\].*\[16, 32, 64, 256\]'):
        neck(feats)
    with pytest.raises(ValueError, match='4 inputs'):
        neck(feats[:3])
    with pytest.raises(ValueError, match='add_extra_convs'):
        _small_neck(add_extra_convs='on_top')


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet', 'mmpretrain'])
def test_builds_by_plain_name_from_each_toolbox(scope):
    import importlib
    registry = importlib.import_module(f'{scope}.registry').MODELS
    neck = registry.build(dict(type='VTFPN', in_channels=IN_CHANNELS, out_channels=32, num_outs=4,
                               num_tokens=4, token_channels=64))
    assert isinstance(neck, VTFPN)


def test_paper_defaults_and_flops_vs_fpn():
    """At ResNet-50 / 473x473 widths the neck costs >= 6x fewer FLOPs than FPN (paper: 6.4x)."""
    from mmdet.models.necks import FPN

    from vt_mm.analysis import flop_analyzer
    in_ch = [256, 512, 1024, 2048]
    feats = tuple(_features(473, 473, in_ch))
    vt = VTFPN(in_ch, 256, 4).eval()
    assert vt.tokenizers[0].num_tokens == 8 and vt.tokenizers[0].token_channels == 1024
    fpn = FPN(in_ch, 256, 4).eval()

    # the benchmarks' counter, with handles for baddbmm(_) and fused attention
    vt_count = flop_analyzer(vt, (feats, ))
    with torch.no_grad():
        fpn_flops, vt_flops = flop_analyzer(fpn, (feats, )).total(), vt_count.total()
        by_op, skipped = vt_count.by_operator(), vt_count.unsupported_ops()
    # every product of the neck is counted: none is left out of the total
    assert not [op for op in skipped if 'mm' in op or 'conv' in op or 'einsum' in op], skipped
    # the counter traces the network, and while tracing VT-FPN takes its plain path (no in-place
    # accumulation): the lateral products (1.76 G) are baddbmm with the bias
    assert by_op.get('baddbmm', 0) > 1.7e9, by_op
    assert 12.0e9 < fpn_flops < 13.5e9  # paper: 12.8 G
    assert fpn_flops / vt_flops >= 6.0, (fpn_flops, vt_flops)


@pytest.mark.parametrize('hw', [(65, 97), (128, 128)])
def test_semantic_fpn_with_vtfpn_any_input_size(hw):
    """The whole LIP model (ResNet-50 + VT-FPN + FPNHead) gives logits at 1/4 for odd sizes."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile('configs/vtfpn_lip.py')
    cfg.model.pretrained = None
    cfg.model.backbone.norm_cfg = cfg.model.decode_head.norm_cfg = dict(type='BN')
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        logits = model._forward(torch.randn(1, 3, *hw))
    assert logits.shape == (1, 20, -(-hw[0] // 4), -(-hw[1] // 4))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize('config,classes,neck,depth', [
    ('configs/vtfpn_lip_r101.py', 20, 'VTFPN', 101),
    ('configs/fpn_lip_r101.py', 20, 'FPN', 101),
    ('configs/fpn_coco-stuff164k.py', 171, 'FPN', 50),
    ('configs/vtfpn_coco-stuff164k.py', 171, 'VTFPN', 50),
    ('configs/vtfpn_coco-stuff164k_r101.py', 171, 'VTFPN', 101),
    ('configs/fpn_coco-stuff164k_r101.py', 171, 'FPN', 101),
    ('configs/vt_resnet/vtfpn_vt-resnet50_lip.py', 20, 'VTFPN', 50),
])
def test_paper_segmentation_configs_build_and_run(config, classes, neck, depth):
    """Table 9/10 rows and the all-token VT-ResNet-50 + VT-FPN model: build, right data, run."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile(config)
    assert cfg.model.neck.type == neck and cfg.model.backbone.depth == depth
    assert cfg.model.decode_head.num_classes == classes
    dataset = cfg.train_dataloader.dataset
    assert dataset.type == ('COCOStuffDataset' if classes == 171 else 'LIPDataset')
    if classes == 171:
        assert cfg.optim_wrapper.optimizer.lr == 0.04  # batch 32 as the paper
        assert cfg.test_pipeline[1].scale == (1216, 800)
    cfg.model.pretrained = None
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.norm_cfg = cfg.model.decode_head.norm_cfg = dict(type='BN')
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    with torch.no_grad():
        logits = model._forward(torch.randn(1, 3, 97, 131))
    assert logits.shape == (1, classes, 25, 33)
    assert torch.isfinite(logits).all()
    if cfg.model.backbone.type == 'VTResNet':
        feats = model.extract_feat(torch.randn(1, 3, 96, 96))
        assert [f.shape[-1] for f in feats] == [24, 12, 6, 6]  # strides 4, 8, 16, 16
        assert [f.shape[1] for f in model.backbone(torch.randn(1, 3, 64, 64))] == \
            [256, 512, 1024, 1024]


@pytest.mark.parametrize('out,heads', [(256, 16), (128, 16), (24, 8), (8, 8), (6, 2)])
def test_default_heads_and_width_suit_any_out_channels(out, heads):
    neck = VTFPN([16, 32], out, 2)
    assert neck.token_channels == 4 * out
    assert neck.projectors[0].num_heads == neck.transformer[0].num_heads == heads
    assert neck.projectors[0].query_groups == neck.tokenizers[0].value.groups == heads
    outs = neck([torch.randn(1, 16, 9, 7), torch.randn(1, 32, 5, 4)])
    assert outs[0].shape == (1, out, 9, 7)
    with pytest.raises(ValueError, match='num_heads=16 must divide out_channels=24'):
        VTFPN([16, 32], 24, 2, num_heads=16)


def _reference_forward(neck, inputs):
    """VT-FPN written plainly, module by module (FPN's lateral convs and top-down sum, the
    layers' own forwards, a copied residual): what the fast paths must reproduce."""
    import torch.nn.functional as F
    used = inputs[neck.start_level:neck.backbone_end_level]
    laterals = [conv(x) for conv, x in zip(neck.lateral_convs, used)]
    for i in range(len(laterals) - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + F.interpolate(
            laterals[i], size=laterals[i - 1].shape[2:], mode='nearest')
    tokens = []
    for i, x in enumerate(laterals):
        t, a = neck.tokenizers[i](x)
        tokens.append(neck.pos_encodings[i](t, a))
    mixed = neck.transformer(torch.cat(tokens, 2)).split([t.shape[2] for t in tokens], 2)
    outs = []
    for proj, x, t in zip(neck.projectors, laterals, mixed):
        attn = proj.attention(x, t)  # N, h, HW, L
        n, c, hgt, wid = x.shape
        v = torch.nn.functional.conv1d(t, proj.value.weight, proj.value.bias)
        v = v.view(n, proj.num_heads, c // proj.num_heads, -1)
        delta = torch.einsum('nhdl,nhpl->nhdp', v, attn).reshape(n, c, hgt, wid)
        outs.append(x + delta)
    return outs


@pytest.mark.parametrize('hw', [(473, 473), (64, 96), (97, 65)])
def test_fast_paths_give_the_plain_outputs(hw):
    """Laterals as products with the top-down sum accumulated in place, broadcast nearest
    upsampling and in-place projector residuals (issue 11's speed work) change no output,
    with or without autograd; odd sizes take F.interpolate."""
    torch.manual_seed(0)
    neck = VTFPN(IN_CHANNELS, 32, 4).eval()
    feats = _features(*hw)
    with torch.no_grad():
        expected = _reference_forward(neck, feats)
        fast = neck(feats)
        inputs_before = [f.clone() for f in feats]
        neck(feats)
    assert all(torch.equal(a, b) for a, b in zip(feats, inputs_before))  # inputs untouched
    with torch.enable_grad():
        trained = neck(feats)
    for e, f, t in zip(expected, fast, trained):
        assert torch.allclose(f, e, atol=1e-5, rtol=1e-5), (f - e).abs().max()
        assert torch.allclose(t, e, atol=1e-5, rtol=1e-5), (t - e).abs().max()


def _randomize(module, seed=0):
    """Non-zero biases and BN statistics everywhere (ConvModule initialises biases to 0, which
    would hide a fast path that drops one)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_((torch.rand(p.shape, generator=gen) - 0.5) * (0.4 if 'bias' in name else 0.2))
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return module


@pytest.mark.parametrize('hw', [(473, 473), (97, 65)])
def test_fast_paths_keep_biases_and_gradients(hw):
    """Guards against a fast path that is only right for zero biases or for the forward pass:
    the fused laterals must add every lateral bias (they move it onto the coarser map), and the
    gradients with respect to the inputs and every parameter must equal the plain forward's,
    at the paper's size and an odd one. In float64, so that summation order (the fused and the
    plain paths add in different orders over 10^4-pixel maps) cannot hide or fake a
    difference."""
    torch.manual_seed(0)
    neck = _randomize(VTFPN(IN_CHANNELS, 32, 4)).eval().double()
    assert neck._fused_laterals
    assert all(conv.conv.bias.abs().min() > 0 for conv in neck.lateral_convs)
    feats = [f.double().requires_grad_() for f in _features(*hw)]
    results = []
    for forward in (_reference_forward, lambda n, x: n(x)):
        outs = forward(neck, feats)
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum()
                   for o in outs)
        grads = torch.autograd.grad(loss, feats + list(neck.parameters()), allow_unused=True)
        results.append(([o.detach() for o in outs], grads))
    (ref_outs, ref_grads), (outs, grads) = results
    for e, f in zip(ref_outs, outs):
        torch.testing.assert_close(f, e, atol=1e-10, rtol=1e-10)
    names = [f'input {i}' for i in range(len(feats))] + [n for n, _ in neck.named_parameters()]
    for name, e, g in zip(names, ref_grads, grads):
        if e is None:
            assert g is None or not g.any(), name
            continue
        torch.testing.assert_close(g, e, atol=1e-9, rtol=1e-9, msg=lambda m: f'{name}: {m}')


def test_nearest_repeat_matches_interpolate():
    """The broadcast fast path's premise, checked against PyTorch itself: nearest upsampling by
    an integer factor k reads pixel i // k (every size up to 160, factors up to 8)."""
    import torch.nn.functional as F

    from vt_mm.models.necks.vt_fpn import _nearest_repeat
    checked = 0
    for size in range(1, 161):
        for out in list(range(size, 4 * size + 2)) + [k * size for k in range(5, 9)]:
            k = _nearest_repeat(size, out)
            assert (k > 0) == (out % size == 0)
            if k:
                assert k == out // size
                x = torch.arange(size, dtype=torch.float32).view(1, 1, size, 1)
                up = x[:, :, :, None].expand(1, 1, size, k, 1).reshape(1, 1, out, 1)
                assert torch.equal(up, F.interpolate(x, size=(out, 1), mode='nearest')), (size, k)
                checked += 1
    assert checked > 1000


def test_on_lateral_extra_conv_reads_the_unprojected_lateral():
    """'on_lateral' extra convs read the last lateral, which the in-place projection must keep."""
    torch.manual_seed(0)
    neck = VTFPN(IN_CHANNELS, 32, 5, add_extra_convs='on_lateral').eval()
    feats = _features(64, 64)
    with torch.no_grad():
        outs = neck(feats)
        lateral = neck.lateral_features(feats)[-1]
        assert torch.allclose(outs[-1], neck.extra_convs[0](lateral), atol=1e-6)


def test_zero_init_projection_starts_as_laterals():
    """zero_init_projection: after init_weights the outputs are the laterals + top-down sum;
    by default the projectors add something."""
    feats = _features(64, 48)
    for zero in (True, False):
        torch.manual_seed(0)
        neck = _small_neck(zero_init_projection=zero)
        neck.init_weights()
        with torch.no_grad():
            outs = neck(feats)
            laterals = neck.lateral_features(feats)
        same = all(torch.equal(o, x) for o, x in zip(outs, laterals))
        assert same is zero


def test_tokenizer_cfg_reaches_every_level():
    """tokenizer_cfg=dict(scale_logits=False): every level's tokenizer drops the 1/sqrt(C)
    scale, so with the same weights its attention is sharper (lower entropy)."""
    feats = _features(64, 48)
    torch.manual_seed(0)
    scaled = _small_neck().eval()
    plain = _small_neck(tokenizer_cfg=dict(scale_logits=False)).eval()
    plain.load_state_dict(scaled.state_dict())
    assert all(not t.scale_logits for t in plain.tokenizers)
    with torch.no_grad():
        for a, b in zip(scaled.attention_maps(feats), plain.attention_maps(feats)):
            entropy = [-(m.flatten(2) * m.flatten(2).log()).sum(-1).mean() for m in (a, b)]
            assert entropy[1] < entropy[0]


def test_token_statistics_detect_collapsed_tokens():
    """Zero tokenizer filters give uniform attention, so every token is the image mean:
    entropy 1, peak 1, similarity 1. Trained-looking (sharp) filters give distinct tokens."""
    feats = _features(64, 48)
    torch.manual_seed(0)
    neck = _small_neck(with_pos_encoding=False).eval()
    with torch.no_grad():
        for tok in neck.tokenizers:
            tok.token_coef.weight.zero_()
            tok.token_coef.bias.zero_()
        collapsed = neck.token_statistics(feats)
        for tok in neck.tokenizers:
            tok.token_coef.weight.normal_(0, 10.0)
        sharp = neck.token_statistics(feats)
    assert len(collapsed) == 4
    for level in collapsed:
        assert level['attention_entropy'] == pytest.approx(1.0, abs=1e-5)
        assert level['attention_peak'] == pytest.approx(1.0, abs=1e-4)
        assert level['token_similarity'] == pytest.approx(1.0, abs=1e-4)
        # identical tokens have identical keys: every pixel mixes them uniformly
        assert level['projector_entropy'] == pytest.approx(1.0, abs=1e-5)
        assert level['projection_ratio'] > 0
    for level in sharp[:2]:  # the finer levels have enough pixels to choose from
        assert level['attention_entropy'] < 0.9
        assert level['attention_peak'] > 2
        assert level['token_similarity'] < 0.9
        assert level['projector_entropy'] < 1.0 - 1e-4
