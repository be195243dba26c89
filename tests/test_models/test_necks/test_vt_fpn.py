"""VT-FPN (vt_mm/models/necks/vt_fpn.py): shapes, the paper's defaults and FLOPs, the fast paths
against the reference computation, the FPN vocabulary, the output-conv variants, every
argument's check and mmdet detectors with VT-FPN."""
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.det import coco_batch, loss_step
from helpers.necks import IN_CHANNELS
from helpers.necks import features as _features
from helpers.necks import level_features as _level_features
from helpers.necks import neck as _neck
from helpers.necks import small_neck as _small_neck
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

from vt_mm import analysis
from vt_mm.datasets.demo_shapes import SHAPE_CLASSES, make_demo_coco
from vt_mm.models.necks import VTFPN


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
    cfg = Config.fromfile('configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py')
    cfg.model.pretrained = None
    cfg.model.backbone.norm_cfg = cfg.model.decode_head.norm_cfg = dict(type='BN')
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        logits = model._forward(torch.randn(1, 3, *hw))
    assert logits.shape == (1, 20, -(-hw[0] // 4), -(-hw[1] // 4))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize('config,classes,neck,depth', [
    ('configs/vtfpn/vtfpn_r101_8xb12-40k_lip-473x473.py', 20, 'VTFPN', 101),
    ('configs/vtfpn/fpn_r101_8xb12-40k_lip-473x473.py', 20, 'FPN', 101),
    ('configs/vtfpn/fpn_r50_8xb4-80k_coco-stuff164k-640x640.py', 171, 'FPN', 50),
    ('configs/vtfpn/vtfpn_r50_8xb4-80k_coco-stuff164k-640x640.py', 171, 'VTFPN', 50),
    ('configs/vtfpn/vtfpn_r101_8xb4-80k_coco-stuff164k-640x640.py', 171, 'VTFPN', 101),
    ('configs/vtfpn/fpn_r101_8xb4-80k_coco-stuff164k-640x640.py', 171, 'FPN', 101),
    ('configs/vtfpn/vtfpn_vt-resnet50_8xb12-40k_lip-473x473.py', 20, 'VTFPN', 50),
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
    upsampling and in-place projector residuals change no output, with or without autograd;
    odd sizes take F.interpolate. The reference forward (fast_paths=False) is the equations
    written out here."""
    import copy

    from vt_mm.models.layers import set_fast_paths
    torch.manual_seed(0)
    neck = VTFPN(IN_CHANNELS, 32, 4).eval()
    reference = set_fast_paths(copy.deepcopy(neck), False)
    assert not any(getattr(m, 'fast_paths', False) for m in reference.modules())
    feats = _features(*hw)
    with torch.no_grad():
        expected = _reference_forward(neck, feats)
        for e, r in zip(expected, reference(feats)):
            torch.testing.assert_close(r, e, atol=1e-5, rtol=1e-5)
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
    import copy

    from vt_mm.models.layers import set_fast_paths
    torch.manual_seed(0)
    neck = _randomize(VTFPN(IN_CHANNELS, 32, 4)).eval().double()
    assert neck._fused_laterals
    assert all(conv.conv.bias.abs().min() > 0 for conv in neck.lateral_convs)
    feats = [f.double().requires_grad_() for f in _features(*hw)]
    reference = set_fast_paths(copy.deepcopy(neck), False)
    results = []
    for forward, module in ((_reference_forward, neck), (lambda n, x: n(x), neck),
                            (lambda n, x: n(x), reference)):
        outs = forward(module, feats)
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum()
                   for o in outs)
        grads = torch.autograd.grad(loss, feats + list(module.parameters()), allow_unused=True)
        results.append(([o.detach() for o in outs], grads))
    (ref_outs, ref_grads), *others = results
    names = [f'input {i}' for i in range(len(feats))] + [n for n, _ in neck.named_parameters()]
    for outs, grads in others:  # the fast paths, and the reference forward of the module
        for e, f in zip(ref_outs, outs):
            torch.testing.assert_close(f, e, atol=1e-10, rtol=1e-10)
        for name, e, g in zip(names, ref_grads, grads):
            if e is None:
                assert g is None or not g.any(), name
                continue
            torch.testing.assert_close(g, e, atol=1e-9, rtol=1e-9, msg=lambda m: f'{name}: {m}')


def test_every_declared_layer_is_called():
    """Forward hooks see every convolution the neck declares: all of them in the reference
    forward; with the fast paths all but the fused laterals and the queries folded into the
    key (both used by weight). FLOPs are counted per module accordingly."""
    import copy

    from vt_mm.analysis.flops import flop_analyzer
    from vt_mm.models.layers import set_fast_paths
    neck = _neck()
    feats = _level_features(64, 64)
    convs = {name for name, m in neck.named_modules()
             if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d))}
    reference = set_fast_paths(copy.deepcopy(neck), False)
    folded = {f'projectors.{i}.query' for i in range(4)
              if neck.projectors[i]._fold_is_cheaper(16 ** 2 // 4 ** i, 4)}
    assert folded  # the paper's setting folds on the finer levels
    for model, skipped in ((reference, set()),
                           (neck, {f'lateral_convs.{i}.conv' for i in range(4)} | folded)):
        called = set()
        names = {m: n for n, m in model.named_modules()}
        handles = [m.register_forward_hook(lambda m, i, o: called.add(names[m]))
                   for m in model.modules()]
        with torch.no_grad():
            model(feats)
        for h in handles:
            h.remove()
        assert convs - called == skipped, (convs - called) ^ skipped
    assert {f'lateral_convs.{i}.conv' for i in range(4)} <= convs
    with torch.no_grad():  # traced: unfused laterals; a folded query counts in its projector
        by_module = flop_analyzer(neck, (feats, )).by_module()
    assert {name for name in convs if not by_module[name]} == folded
    assert all(by_module[q.rsplit('.', 1)[0]] > 0 for q in folded)


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


@pytest.mark.parametrize('extra,in_place', [('on_input', [True] * 4),
                                            ('on_lateral', [True, True, True, False])])
def test_fast_paths_are_taken(extra, in_place, monkeypatch):
    """The fast paths' outputs equal the reference (above), so a condition that never takes one
    would pass that test: here the top-down pathway upsamples by broadcasting (no
    F.interpolate at integer factors) and each projector adds onto its lateral in place, except
    the last lateral when 'on_lateral' extra convs read it after projection."""
    neck = VTFPN(IN_CHANNELS, 32, 5, add_extra_convs=extra).eval()
    calls, inputs = [], []

    def pre_hook(module, args, kwargs):
        calls.append(kwargs['inplace'])
        inputs.append(args[0].data_ptr())

    shared = []
    for proj in neck.projectors:
        proj.register_forward_pre_hook(pre_hook, with_kwargs=True)
        proj.register_forward_hook(lambda m, a, out: shared.append(out.data_ptr() == inputs[-1]))
    interpolations = []
    original = F.interpolate
    monkeypatch.setattr(F, 'interpolate', lambda *a, **k: interpolations.append(1) or
                        original(*a, **k))
    with torch.no_grad():
        neck(_features(64, 96))
    assert calls == shared == in_place
    assert interpolations == []


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
    # every width counts: an odd C_T = 9 (C_T/2 = 4 alone would give 4 heads and 4 K/Q/V
    # groups, which 9 does not split into) and the narrowest C_T = 2 (C_T/2 = 1: one head)
    for tc in (9, 2):
        tiny = VTFPN(IN_CHANNELS, 32, 4, token_channels=tc)
        assert tiny.transformer[0].num_heads == tiny.projectors[0].query_groups == 1
        feats = _features(32, 32)
        assert tiny(feats)[0].shape == (1, 32, *feats[0].shape[2:])


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
    feats = _level_features(64, 96)
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
        outs = neck(_level_features(64, 96))
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
    feats = _level_features(*hw, channels=in_channels)
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
        outs = sliced(_level_features(*hw))
    assert [o.shape[1] for o in outs] == [32, 32]
    assert outs[0].shape[2:] == _level_features(*hw)[1].shape[2:]


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
    feats = _level_features(64, 64)
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
        neck.lateral_features(_level_features(72, 72))  # levels 18, 9, 5, 3


def test_top_down_with_normed_laterals_is_fpns():
    """Laterals with BN (not fusable: the plain path) against ConvModule + the sum written out
    (a minus for the plus in the plain path's loop passed every other test)."""
    neck = _neck(norm_cfg=dict(type='BN'))
    assert not neck._fused_laterals
    gen = torch.Generator().manual_seed(1)
    for conv in neck.lateral_convs:
        conv.bn.running_mean.copy_(torch.randn(32, generator=gen))
        conv.bn.running_var.copy_(torch.rand(32, generator=gen) + 0.5)
    feats = _level_features(72, 104)
    with torch.no_grad():
        got = neck.lateral_features(feats)
        plain = [conv(x) for conv, x in zip(neck.lateral_convs, feats)]
        for i in range(3, 0, -1):
            plain[i - 1] = plain[i - 1] + F.interpolate(plain[i], size=plain[i - 1].shape[2:])
    for g, p in zip(got, plain):
        torch.testing.assert_close(g, p, rtol=1e-5, atol=1e-5)


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


def test_laterals_are_pointwise_convs_unless_a_conv_cfg_is_given():
    """conv_cfg=None builds the laterals' 1x1 convs as PointwiseConv2d (a matrix product, same
    parameters and result as nn.Conv2d, with norm and activation); a conv_cfg is kept."""
    from mmcv.cnn import ConvModule

    from vt_mm.models.layers import PointwiseConv2d
    assert all(type(c.conv) is PointwiseConv2d for c in _neck().lateral_convs)
    assert all(type(c.conv).__name__ == 'ConvWS2d'
               for c in _neck(conv_cfg=dict(type='ConvWS')).lateral_convs)
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 7)
    cfg = dict(norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'))
    fast = ConvModule(8, 4, 1, conv_cfg=dict(type=PointwiseConv2d), **cfg).eval()
    plain = ConvModule(8, 4, 1, **cfg).eval()
    fast.norm.running_mean.uniform_(-1, 1)
    fast.norm.running_var.uniform_(0.5, 2)
    plain.load_state_dict(fast.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x))


def test_weight_standardised_laterals_are_not_run_as_plain_products():
    """conv_cfg=dict(type='ConvWS') standardises the weights in its forward: the neck's
    laterals must be the modules' own outputs, not W x with the raw weights."""
    neck = _neck(conv_cfg=dict(type='ConvWS'))
    feats = _level_features(32, 32)
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
        neck(_level_features(32, 32)[:3])


def test_extra_convs_without_extra_levels():
    """add_extra_convs with num_outs equal to the levels used: no extra level, no extra conv."""
    neck = _neck(add_extra_convs='on_input')
    assert len(neck.extra_convs) == 0
    with torch.no_grad():
        outs = neck(_level_features(32, 32))
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
    feats = _level_features(64, 64)
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


def _randomise_biases(module):
    gen = torch.Generator().manual_seed(1)
    for name, p in module.named_parameters():
        if name.endswith('bias'):
            p.data.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def test_default_has_no_output_convs():
    """The paper's design: FPN's 3x3 output convs replaced, not kept."""
    neck = _neck()
    assert neck.output_convs is None and neck.output_conv_levels == ()
    assert not any(k.startswith('output_convs') for k in neck.state_dict())


def test_conv3x3_with_silent_tokens_is_mmdets_fpn():
    """output_convs='conv3x3' applies FPN's own output conv after the token projection: with
    the projectors' values at zero (the tokens add nothing) the neck is mmdet's FPN exactly,
    given FPN's lateral and output weights (random biases, so a dropped bias shows)."""
    from mmdet.models.necks import FPN
    neck = _neck(output_convs='conv3x3', zero_init_projection=True)
    fpn = FPN(IN_CHANNELS, 32, 4).eval()
    _randomise_biases(fpn)
    own = neck.state_dict()
    for key, value in fpn.state_dict().items():
        own[key.replace('fpn_convs', 'output_convs')] = value
    neck.load_state_dict(own)
    feats = _features(65, 97, seed=0)
    with torch.no_grad():
        for mine, theirs in zip(neck(feats), fpn(feats)):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_dwsep3x3_is_a_depthwise_then_pointwise_conv_on_the_papers_output():
    base = _neck()
    neck = _neck(output_convs='dwsep3x3')
    neck.load_state_dict(dict(neck.state_dict(), **base.state_dict()))
    _randomise_biases(neck.output_convs)
    feats = _features(64, 64, seed=0)
    with torch.no_grad():
        plain, outs = base(feats), neck(feats)
    for i, (x, y) in enumerate(zip(plain, outs)):
        conv = neck.output_convs[i]
        dw, pw = conv.depthwise_conv.conv, conv.pointwise_conv.conv
        assert dw.groups == 32 and dw.kernel_size == (3, 3) and pw.kernel_size == (1, 1)
        want = F.conv2d(F.conv2d(x, dw.weight, dw.bias, padding=1, groups=32), pw.weight,
                        pw.bias)
        torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('output_convs', ['conv3x3', 'dwsep3x3'])
def test_output_convs_keep_the_output_scale_at_initialisation(output_convs):
    """Freshly initialised, a variant's outputs have the paper's scale (std within 0.6-1.6x
    on every level). Guards against torch's Xavier fans on the depthwise conv (fan_out 9C):
    the dwsep outputs started 11x smaller, and the detectors trailed."""
    feats = [torch.randn(1, c, 64 // 2**i, 64 // 2**i,
                         generator=torch.Generator().manual_seed(i))
             for i, c in enumerate([64, 128, 256, 512])]

    def stds(**kw):
        torch.manual_seed(0)
        neck = VTFPN([64, 128, 256, 512], 256, 4, **kw)
        neck.init_weights()
        with torch.no_grad():
            return [float(x.std()) for x in neck.eval()(feats)]

    for mine, paper in zip(stds(output_convs=output_convs), stds()):
        assert 0.6 < mine / paper < 1.6, (output_convs, mine, paper)


def test_dwsep_init_leaves_loaded_weights_alone():
    """The depthwise re-draw applies to the default Xavier init only: a neck initialised
    otherwise (here: constant) keeps what its init_cfg gave."""
    neck = VTFPN([64, 128, 256, 512], 32, 4, output_convs='dwsep3x3',
                 init_cfg=dict(type='Constant', layer='Conv2d', val=0.5))
    neck.init_weights()
    assert torch.all(neck.output_convs[0].depthwise_conv.conv.weight == 0.5)


XAVIER = dict(type='Xavier', layer=['Conv2d', 'Conv1d'], distribution='uniform')  # the default


@pytest.mark.parametrize('init_cfg', [XAVIER, [XAVIER]], ids=['dict', 'list'])
def test_dwsep_depthwise_weights_are_xavier_uniform_with_the_true_fans(init_cfg):
    """The depthwise 3x3 is drawn from U(-b, b), b = sqrt(6 / (9 + 9)) (fan_in = fan_out = 9
    per group), whether init_cfg is one dict or a list of them (mmengine takes both). Guards
    against a wrong bound (e.g. sqrt(4 / 9), outputs 15% off, inside the scale test's band) and
    against a list init_cfg skipping the re-draw (torch's fans again: b = sqrt(6 / (9 + 9C)))."""
    torch.manual_seed(0)
    neck = VTFPN([64, 128, 256, 512], 256, 4, output_convs='dwsep3x3', init_cfg=init_cfg)
    neck.init_weights()
    bound = (6 / 18)**0.5
    for conv in neck.output_convs:
        weight = conv.depthwise_conv.conv.weight  # 256 x 1 x 3 x 3: 2304 draws
        assert float(weight.abs().max()) <= bound
        assert float(weight.abs().max()) > 0.98 * bound
        assert abs(float(weight.std()) / (bound / 3**0.5) - 1) < 0.06


@pytest.mark.parametrize('start_level', [0, 1])
def test_output_conv_levels_may_name_every_used_level(start_level):
    """Naming every used level is valid and is the default (all levels). Guards against a
    strict-subset check that rejects the full set."""
    levels = tuple(range(start_level, 4))
    neck = _neck(num_outs=4 - start_level, start_level=start_level, output_convs='conv3x3',
                 output_conv_levels=levels)
    default = _neck(num_outs=4 - start_level, start_level=start_level, output_convs='conv3x3')
    assert neck.output_conv_levels == default.output_conv_levels == levels
    assert neck.state_dict().keys() == default.state_dict().keys()


def test_output_conv_levels_touch_only_those_levels():
    """(2, 3): 3x3 convs on the two coarse levels; the finer outputs are the paper's, the
    extra (max-pool) level is taken from the convolved coarsest output, as FPN's."""
    base = _neck(num_outs=5)
    neck = _neck(num_outs=5, output_convs='conv3x3', output_conv_levels=(3, 2))
    assert neck.output_conv_levels == (2, 3)
    new = [k for k in neck.state_dict() if k not in base.state_dict()]
    assert sorted({k.split('.')[1] for k in new}) == ['2', '3']
    neck.load_state_dict(dict(neck.state_dict(), **base.state_dict()))
    feats = _features(64, 64, seed=0)
    with torch.no_grad():
        plain, outs = base(feats), neck(feats)
        for i in (0, 1):
            torch.testing.assert_close(outs[i], plain[i])
        for i in (2, 3):
            torch.testing.assert_close(outs[i], neck.output_convs[i](plain[i]))
        torch.testing.assert_close(outs[4], F.max_pool2d(outs[3], 1, stride=2))


def test_output_conv_levels_are_backbone_levels_whatever_the_start_level():
    """(2, 3) means backbone levels 2 and 3 (ResNet's strides 16 and 32) with start_level=1
    (RetinaNet's) as with 0 (Semantic FPN's): the same variant setting fits both; a
    positional reading would put the convs on strides 32 and 64 or reject 3. Guards against
    indexing the levels among the used ones."""
    neck = _neck(num_outs=4, start_level=1, output_convs='conv3x3', output_conv_levels=(2, 3))
    assert neck.output_conv_levels == (2, 3)
    assert [type(m).__name__ for m in neck.output_convs] == ['Identity', 'ConvModule',
                                                             'ConvModule']
    base = _neck(num_outs=4, start_level=1)
    neck.load_state_dict(dict(neck.state_dict(), **base.state_dict()))
    feats = _features(64, 64, seed=0)
    with torch.no_grad():
        plain, outs = base(feats), neck(feats)
        torch.testing.assert_close(outs[0], plain[0])  # backbone level 1: untouched
        for i in (1, 2):  # backbone levels 2, 3
            torch.testing.assert_close(outs[i], neck.output_convs[i](plain[i]))


def test_output_convs_train():
    neck = _neck(output_convs='dwsep3x3', output_conv_levels=(0, ))
    neck.train()
    sum(o.square().mean() for o in neck(_features(32, 32, seed=0))).backward()
    for p in neck.output_convs[0].parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_output_convs_cost_what_the_convolutions_cost():
    """The FLOPs a variant adds are exactly its convolutions': 9 C^2 per pixel for conv3x3,
    9 C + C^2 for dwsep3x3, on the chosen levels only."""
    feats = _features(128, 128, seed=0)
    pixels = [f.shape[2] * f.shape[3] for f in feats]
    c = 32

    def macs(**kw):
        return analysis.count_flops(_neck(**kw), feats)[0]

    base = macs()
    assert macs(output_convs='conv3x3') - base == 9 * c * c * sum(pixels)
    assert macs(output_convs='conv3x3', output_conv_levels=(2, 3)) - base == 9 * c * c * (
        pixels[2] + pixels[3])
    assert macs(output_convs='dwsep3x3') - base == (9 * c + c * c) * sum(pixels)


@pytest.mark.parametrize('kw, message', [
    (dict(output_convs='3x3'), r"output_convs must be one of \(None, 'conv3x3', 'dwsep3x3'\)"),
    (dict(output_conv_levels=(2, 3)), 'output_conv_levels=.* needs output_convs'),
    (dict(output_convs='conv3x3', output_conv_levels=(4, )),
     r'VTFPN: output_conv_levels=\(4,\) must be distinct backbone levels in \[0, 4\) \(the '
     r'levels used: start_level=0 to 3; indices into in_channels\)'),
    (dict(output_convs='conv3x3', output_conv_levels=(0, 3), start_level=1),
     r'backbone levels in \[1, 4\) \(the levels used: start_level=1 to 3'),
    (dict(output_convs='conv3x3', output_conv_levels=(1, 1)), 'distinct backbone levels'),
    (dict(output_convs='conv3x3', output_conv_levels=()), 'distinct backbone levels'),
    (dict(output_convs='conv3x3', output_conv_levels=(-1, )),
     r'^VTFPN: output_conv_levels\[0\] must be an integer >= 0'),
])
def test_output_conv_arguments_are_checked(kw, message):
    with pytest.raises(ValueError, match=message):
        VTFPN(IN_CHANNELS, 32, 4, **kw)


def test_output_convs_are_built_with_the_necks_conv_norm_and_act_cfgs():
    """As FPN's output convs: conv_cfg / norm_cfg / act_cfg apply, and with the defaults
    (act_cfg=None) no activation is added (ConvModule's own default would be a ReLU)."""
    from mmcv.cnn.bricks.conv_ws import ConvWS2d
    cfgs = dict(conv_cfg=dict(type='ConvWS'), norm_cfg=dict(type='BN'),
                act_cfg=dict(type='ReLU'))
    full = VTFPN(IN_CHANNELS, 32, 4, output_convs='conv3x3', **cfgs).output_convs[0]
    assert isinstance(full.conv, ConvWS2d) and full.with_norm and full.with_activation
    dwsep = VTFPN(IN_CHANNELS, 32, 4, output_convs='dwsep3x3', **cfgs).output_convs[0]
    for part in (dwsep.depthwise_conv, dwsep.pointwise_conv):
        assert isinstance(part.conv, ConvWS2d) and part.with_norm and part.with_activation
    for kind in ('conv3x3', 'dwsep3x3'):
        bare = VTFPN(IN_CHANNELS, 32, 6, output_convs=kind, add_extra_convs='on_input')
        for module in bare.output_convs.modules():
            if hasattr(module, 'with_activation'):
                assert not module.with_activation and not module.with_norm, (kind, module)
        for module in bare.extra_convs:
            assert not module.with_activation and not module.with_norm


NUM = len(SHAPE_CLASSES)


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    make_demo_coco(str(root), 'train', num_images=2, size=(160, 128), seed=0)
    return str(root)


def _adapt_to_shapes(cfg):
    """Class counts for the generated data; no ImageNet weights offline. Nothing else changes."""
    cfg.model.backbone.init_cfg = None
    if 'bbox_head' in cfg.model:
        cfg.model.bbox_head.num_classes = NUM
    else:
        cfg.model.roi_head.bbox_head.num_classes = NUM
        cfg.model.roi_head.mask_head.num_classes = NUM
    if 'semantic_head' in cfg.model:
        # generated data: the shapes are things, the background is the one stuff class
        cfg.model.semantic_head.num_things_classes = NUM
        cfg.model.semantic_head.num_stuff_classes = 1
        cfg.model.panoptic_fusion_head.num_things_classes = NUM
        cfg.model.panoptic_fusion_head.num_stuff_classes = 1
        cfg.model.test_cfg.panoptic.stuff_area_limit = 16


def _semantic_map(sample):
    """Panoptic FPN's semantic target from the instance masks: things 0..N-1, stuff N."""
    h, w = sample.gt_instances.masks.masks.shape[1:] if len(sample.gt_instances) else \
        sample.metainfo['img_shape']
    seg = np.full((h, w), NUM, dtype=np.int64)
    for mask, label in zip(sample.gt_instances.masks.masks, sample.gt_instances.labels):
        seg[mask.astype(bool)] = int(label)
    sample.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(seg)[None])


@pytest.mark.parametrize('config,base_neck', [
    ('configs/vtfpn/retinanet_r50_vtfpn_1x_coco.py',
     dict(start_level=1, add_extra_convs='on_input', num_outs=5)),
    ('configs/vtfpn/mask-rcnn_r50_vtfpn_1x_coco.py', dict(start_level=0, num_outs=5)),
    ('configs/vtfpn/panoptic-fpn_r50_vtfpn_1x_coco.py', dict(start_level=0, num_outs=5)),
])
def test_detector_with_vtfpn_loss_and_predict(config, base_neck, coco):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = Config.fromfile(config)
    # the neck is the only change: every FPN argument comes from mmdet's base config
    assert cfg.model.neck.type == 'VTFPN'
    assert cfg.model.neck.in_channels == [256, 512, 1024, 2048]
    for key, value in base_neck.items():
        assert cfg.model.neck.get(key, 0) == value, key
    _adapt_to_shapes(cfg)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with_mask = 'roi_head' in cfg.model
    batch = coco_batch(coco, with_mask)
    if 'semantic_head' in cfg.model:
        for sample in batch['data_samples']:
            _semantic_map(sample)
    losses = loss_step(model, batch)
    # gradients reach the visual-token layers of the neck
    assert model.neck.transformer[0].key.weight.grad is not None
    assert model.neck.tokenizers[0].token_coef.weight.grad.abs().sum() > 0
    if with_mask:
        assert 'loss_mask' in losses
    if 'semantic_head' in cfg.model:
        assert 'loss_seg' in losses
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(batch, False), mode='predict')
    assert len(results) == 2
    if 'semantic_head' in cfg.model:
        assert results[0].pred_panoptic_seg.sem_seg.shape[-2:] == (128, 160)
    else:
        assert 'bboxes' in results[0].pred_instances
