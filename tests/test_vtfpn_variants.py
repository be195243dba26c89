"""VT-FPN's neck variants for the accuracy / FLOPs trade (``output_convs``,
``output_conv_levels``; issue "VT-FPN in the paper's regime", item 3): what each computes,
what it costs, and that the default stays the paper's design (no output convolutions)."""
import pytest
import torch
import torch.nn.functional as F
from test_vtfpn import IN_CHANNELS, _features, _small_neck

import vt_mm  # noqa: F401
from vt_mm import analysis
from vt_mm.models.necks import VTFPN


def _neck(**kw):
    torch.manual_seed(0)
    neck = _small_neck(**kw)
    neck.init_weights()
    return neck.eval()


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
