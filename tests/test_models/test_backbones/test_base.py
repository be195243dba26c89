"""The backbone contract (vt_mm/models/backbones/base.py) on every family: arch names and aliases,
pretrained as init_cfg, frozen_stages and norm_eval through the parameters they freeze, train/eval
modes, attention maps."""
import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from vt_mm.models.backbones import PyramidTNT, SeaFormer, VTResNet
from vt_mm.models.backbones.base import BackboneContract, UnknownArchError

BUILDERS = {
    'VTResNet': lambda **kw: VTResNet(18, **kw),
    'PyramidTNT': lambda **kw: PyramidTNT('ti', **kw),
    'SeaFormer': lambda **kw: SeaFormer('t', **kw),
}


INPUT = {'VTResNet': 64, 'PyramidTNT': 64, 'SeaFormer': 64}


@pytest.mark.parametrize('name', list(BUILDERS))
def test_train_and_eval_return_self(name):
    model = BUILDERS[name]()
    assert model.train() is model
    assert model.eval() is model and not model.training


@pytest.mark.parametrize('cls,bad', [(VTResNet, 42), (PyramidTNT, 'huge'), (SeaFormer, 'huge')])
def test_unknown_arch_is_one_error_type_listing_the_names(cls, bad):
    with pytest.raises(UnknownArchError) as err:
        cls(bad)
    assert isinstance(err.value, ValueError) and isinstance(err.value, KeyError)
    message = str(err.value)
    assert message.startswith(f'{cls.__name__}: unknown') and repr(bad) in message
    for name in cls.arch_zoo:
        assert repr(name) in message  # every valid name is listed


# every alias and the variant it must name, written out (not read from ARCH_ALIASES, so that a
# wrong entry there cannot agree with itself)
EXPECTED_ALIASES = [('t', 'tiny'), ('ti', 'tiny'), ('s', 'small'), ('m', 'medium'), ('b', 'base'),
                    ('l', 'large'), ('T', 'tiny'), ('Ti', 'tiny'), ('L', 'large')]


@pytest.mark.parametrize('cls', [PyramidTNT, SeaFormer])
@pytest.mark.parametrize('alias,name', EXPECTED_ALIASES)
def test_every_alias_names_its_variant(cls, alias, name):
    """Guards against an alias resolving to another variant (e.g. 'l' -> 'base', which built
    the 8.49M SeaFormer-B for 'l'): each alias gives exactly its variant's settings, for every
    family that has the variant, and an unknown variant for the family's table."""
    from vt_mm.models.backbones.base import resolve_arch
    if name not in cls.arch_zoo:
        with pytest.raises(UnknownArchError, match=f'unknown arch {alias!r}'):
            resolve_arch(cls.__name__, alias, cls.arch_zoo)
        return
    assert resolve_arch(cls.__name__, alias, cls.arch_zoo) == cls.arch_zoo[name]
    others = [v for k, v in cls.arch_zoo.items() if k != name]
    assert all(v != cls.arch_zoo[name] for v in others)  # the variants are distinguishable


def test_alias_builds_the_variant_model():
    """SeaFormer('l') is SeaFormer-L (its parameter count), not the base model."""
    def count(m):
        return sum(p.numel() for p in m.parameters())
    assert count(SeaFormer('l')) == count(SeaFormer('large')) != count(SeaFormer('base'))
    assert count(PyramidTNT('ti')) == count(PyramidTNT('tiny')) != count(PyramidTNT('small'))


@pytest.mark.parametrize('name', list(BUILDERS))
def test_pretrained_is_a_deprecated_init_cfg(name, tmp_path):
    src = BUILDERS[name]()
    ckpt = tmp_path / 'backbone.pth'
    torch.save({'state_dict': src.state_dict()}, ckpt)
    with pytest.warns(UserWarning, match=f'^DeprecationWarning: {name}: pretrained is deprecated'):
        dst = BUILDERS[name](pretrained=str(ckpt))
    assert dst.init_cfg == dict(type='Pretrained', checkpoint=str(ckpt))
    dst.init_weights()
    for key, value in src.state_dict().items():
        assert torch.equal(value, dst.state_dict()[key]), key
    with pytest.raises(ValueError, match=f'^{name}: give either pretrained or init_cfg'):
        BUILDERS[name](pretrained=str(ckpt), init_cfg=dict(type='Pretrained', checkpoint='x'))


def test_seaformer_takes_pretrained_from_mmseg_encoder_decoder(tmp_path):
    """mmseg's EncoderDecoder passes ``pretrained`` to the backbone (the reported TypeError)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile('configs/seaformer/seaformer-tiny_8xb4-160k_ade20k-512x512.py')
    cfg.model.backbone.init_cfg = None
    cfg.model.pretrained = str(tmp_path / 'seaformer_t.pth')
    with pytest.warns(UserWarning, match='pretrained is deprecated'):
        model = MODELS.build(cfg.model)
    assert model.backbone.init_cfg['checkpoint'] == cfg.model.pretrained


@pytest.mark.parametrize('norm', ['SyncBN', 'BN'])
@pytest.mark.parametrize('name', list(BUILDERS))
def test_norm_eval_freezes_every_batchnorm_type(name, norm):
    """Guards against norm_eval applying to ``nn.BatchNorm2d`` only: the SeaFormer configs use
    SyncBN (67 of 67 layers stayed in training mode), and PyramidTNT's stem and detection
    upsampling take ``norm_cfg`` too."""
    model = BUILDERS[name](norm_eval=True, norm_cfg=dict(type=norm, requires_grad=True))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms
    if norm == 'SyncBN':
        assert all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    model.train()
    assert not any(m.training for m in norms)
    assert model.training  # the rest still trains


@pytest.mark.parametrize('name', list(BUILDERS))
def test_frozen_stages_and_norm_eval_survive_train(name):
    model = BUILDERS[name](frozen_stages=1, norm_eval=True)
    frozen = model._frozen_parts()
    assert frozen
    model.train()
    for part in frozen:
        params = [part] if isinstance(part, nn.Parameter) else list(part.parameters())
        assert params and not any(p.requires_grad for p in params)
        if isinstance(part, nn.Module):
            assert not any(m.training for m in part.modules())
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable  # later stages still learn
    # a step changes nothing that is frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optim = torch.optim.SGD(trainable, lr=0.1)
    size = INPUT[name]
    out = model(torch.randn(2, 3, size, size))
    sum(o.float().mean() for o in out).backward()
    optim.step()
    after = model.state_dict()
    for part in frozen:
        tensors = [part] if isinstance(part, nn.Parameter) else list(part.state_dict().values())
        for t in tensors:
            key = next(k for k, v in after.items() if v.data_ptr() == t.data_ptr())
            assert torch.equal(before[key], after[key]), key


def test_vt_attention_maps_share_one_name():
    from vt_mm.models.necks import VTFPN
    backbone = VTResNet(18).eval()
    maps = backbone.attention_maps(torch.randn(1, 3, 64, 64))
    assert len(maps) == len(backbone.vt_modules) and maps[0].shape == (1, 16, 4, 4)
    assert torch.allclose(maps[0].sum(dim=(2, 3)), torch.ones(1, 16))
    neck = VTFPN([32, 64], 32, 2).eval()
    maps = neck.attention_maps([torch.randn(1, 32, 16, 16), torch.randn(1, 64, 8, 8)])
    assert [tuple(m.shape) for m in maps] == [(1, 8, 16, 16), (1, 8, 8, 8)]


def test_attention_maps_of_pyramid_tnt_and_seaformer():
    """One name on every backbone; the weights are the ones the forward pass uses (rows sum to
    1; PyramidTNT's fused kernel output equals the explicit path that records them)."""
    from vt_mm.models.backbones import PyramidTNT, SeaFormer
    ptnt = PyramidTNT('tiny').eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        fused = ptnt(x)
    maps = ptnt.attention_maps(x)
    assert len(maps) == sum(len(s.blocks) for s in ptnt.stages)
    # stage 1: 8x12 sentences (stride 8), keys spatially reduced by 4 -> 2x3
    assert maps[0].shape == (1, 2, 8 * 12, 2 * 3)
    assert all(torch.allclose(m.sum(-1), torch.ones(())) for m in maps)
    assert all(m._attention_store is None for m in ptnt._attention_modules())
    with torch.no_grad():
        after = ptnt(x)  # recording is off again: the fused path, same outputs
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fused, after))

    sea = SeaFormer('tiny').eval()
    maps = sea.attention_maps(torch.randn(1, 3, 64, 96))
    assert len(maps) == len(sea._attention_modules()) > 0
    rows, cols = maps[0]
    assert rows.shape[-2:] == (2, 2) and cols.shape[-2:] == (3, 3)  # stride 32: 2x3 grid
    assert torch.allclose(rows.sum(-1), torch.ones(())) and torch.allclose(cols.sum(-1),
                                                                             torch.ones(()))


TABLE = {'tiny': dict(depths=1, dims=2), 'small': dict(depths=3, dims=4)}


def test_resolve_arch_custom_dicts():
    from vt_mm.models.backbones.base import resolve_arch
    custom = dict(depths=5, dims=6, extra=7)
    got = resolve_arch('Net', custom, TABLE)
    assert got == custom and got is not custom  # a new dict
    assert resolve_arch('Net', dict(dims=1), TABLE, required={'dims'}) == dict(dims=1)
    with pytest.raises(UnknownArchError) as info:
        resolve_arch('Net', dict(dims=1), TABLE)
    assert str(info.value) == ("Net: a custom arch dict is missing ['depths']; it needs "
                               "['depths', 'dims']")
    with pytest.raises(UnknownArchError, match=r"missing \['b'\]; it needs \['a', 'b'\]"):
        resolve_arch('Net', dict(a=1, dims=2), TABLE, required={'a', 'b'})
    # depth tables take no dict
    with pytest.raises(UnknownArchError) as info:
        resolve_arch('VTResNet', dict(depths=1, dims=2), {18: TABLE['tiny'], 50: TABLE['small']},
                     what='depth', allow_dict=False)
    assert str(info.value) == ("VTResNet: unknown depth {'depths': 1, 'dims': 2}; choose one of "
                               '[18, 50]')


def test_resolve_arch_names_and_messages():
    from vt_mm.models.backbones.base import resolve_arch
    table = dict(TABLE)
    assert resolve_arch('Net', 'T', table) == TABLE['tiny'] and resolve_arch(
        'Net', 'tiny', table) is not TABLE['tiny']
    with pytest.raises(UnknownArchError) as info:
        resolve_arch('Net', 'huge', table)
    assert str(info.value) == ("Net: unknown arch 'huge'; choose one of ['small', 'tiny'] "
                               "(aliases ['s', 't', 'ti']), or pass a dict with the same keys")
    mixed = {34: {}, 18: {}, 'custom': {}}  # ints before names, each sorted
    with pytest.raises(UnknownArchError) as info:
        resolve_arch('VTResNet', 42, mixed, what='depth', allow_dict=False)
    assert str(info.value) == "VTResNet: unknown depth 42; choose one of [18, 34, 'custom']"
    with pytest.raises(UnknownArchError, match=r"unknown depth \[18\]; choose"):
        resolve_arch('VTResNet', [18], mixed, what='depth', allow_dict=False)  # unhashable
    assert str(UnknownArchError()) == ''


def test_pretrained_to_init_cfg_messages():
    from vt_mm.models.backbones.base import pretrained_to_init_cfg
    init = dict(type='Normal')
    assert pretrained_to_init_cfg('Net', None, init) is init
    with pytest.warns(UserWarning) as record:
        assert pretrained_to_init_cfg('Net', 'a.pth', None) == dict(type='Pretrained',
                                                                   checkpoint='a.pth')
    assert str(record[0].message) == ('DeprecationWarning: Net: pretrained is deprecated, use '
                                      'init_cfg=dict(type="Pretrained", checkpoint=...)')
    with pytest.raises(ValueError) as info:
        pretrained_to_init_cfg('Net', 'a.pth', init)
    assert str(info.value) == ('Net: give either pretrained or init_cfg, not both (pretrained is '
                               'deprecated: use init_cfg=dict(type="Pretrained", checkpoint=...))')
    with pytest.raises(TypeError) as info:
        pretrained_to_init_cfg('Net', 3, None)
    assert str(info.value) == 'Net: pretrained must be a checkpoint path or URL, got int'


class _Minimal(BackboneContract, nn.Module):
    """The contract alone, on a module that sets neither frozen_stages nor norm_eval."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        self.later = nn.BatchNorm2d(4)

    def _frozen_parts(self):
        return [self.stem]


def test_contract_defaults_freeze_nothing_and_keep_bn_training():
    model = _Minimal().train()
    assert all(p.requires_grad for p in model.parameters())
    assert model.stem[1].training and model.later.training
    model.norm_eval = True
    model.train()
    assert not model.stem[1].training and not model.later.training
    model.norm_eval = False
    model.frozen_stages = 0  # 0 freezes the stem (the first parts), -1 nothing
    model.train()
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert not model.stem[1].training and model.later.training
    model.eval().train(False)
    assert not model.later.training


@pytest.mark.parametrize('name', list(BUILDERS))
def test_norm_eval_off_leaves_batchnorm_training(name):
    model = BUILDERS[name](norm_eval=False).train()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.training for m in norms)


def test_a_backbone_without_attention_says_so():
    with pytest.raises(NotImplementedError, match=r'^_Minimal has no attention maps to show$'):
        _Minimal().attention_maps(torch.randn(1, 3, 4, 4))


def _frozen_prefixes(model):
    """Parameter names that do not train, as the set of prefixes used in the tables below."""
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def _covered(names, prefixes):
    return {n for n in names if any(n == p or n.startswith(p + '.') for p in prefixes)}


VT_RESNET = {
    -1: [],
    0: ['conv1', 'bn1'],
    1: ['conv1', 'bn1', 'layer1'],
    2: ['conv1', 'bn1', 'layer1', 'layer2'],
    3: ['conv1', 'bn1', 'layer1', 'layer2', 'layer3'],
    4: ['conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'vt_modules'],
}


PYRAMID_TNT = {
    -1: [],
    0: ['stem', 'sentence_pos', 'word_pos'],
    1: ['stem', 'sentence_pos', 'word_pos', 'stages.0', 'norm0'],
    2: ['stem', 'sentence_pos', 'word_pos', 'stages.0', 'norm0', 'stages.1', 'norm1'],
    3: ['stem', 'sentence_pos', 'word_pos', 'stages.0', 'norm0', 'stages.1', 'norm1',
        'stages.2', 'norm2'],
    4: ['stem', 'sentence_pos', 'word_pos', 'stages.0', 'norm0', 'stages.1', 'norm1',
        'stages.2', 'norm2', 'stages.3', 'norm3'],
}


# SeaFormer-T: five inverted-residual stages, SeaFormer blocks after stages 3 and 4
SEAFORMER_T = {
    -1: [],
    0: ['stem'],
    1: ['stem', 'mv2_stages.0'],
    2: ['stem', 'mv2_stages.0', 'mv2_stages.1'],
    3: ['stem', 'mv2_stages.0', 'mv2_stages.1', 'mv2_stages.2'],
    4: ['stem', 'mv2_stages.0', 'mv2_stages.1', 'mv2_stages.2', 'mv2_stages.3', 'sea_stages.0'],
    5: ['stem', 'mv2_stages.0', 'mv2_stages.1', 'mv2_stages.2', 'mv2_stages.3', 'sea_stages.0',
        'mv2_stages.4', 'sea_stages.1'],
}


# SeaFormer-L: blocks after stages 2, 3 and 4
SEAFORMER_L = {
    2: ['stem', 'mv2_stages.0', 'mv2_stages.1'],
    3: ['stem', 'mv2_stages.0', 'mv2_stages.1', 'mv2_stages.2', 'sea_stages.0'],
    5: ['stem', 'mv2_stages.0', 'mv2_stages.1', 'mv2_stages.2', 'sea_stages.0', 'mv2_stages.3',
        'sea_stages.1', 'mv2_stages.4', 'sea_stages.2'],
}


CASES = ([('vt_resnet', lambda k: VTResNet(18, frozen_stages=k), k, v)
          for k, v in VT_RESNET.items()] +
         [('pyramid_tnt', lambda k: PyramidTNT('ti', out_indices=(0, 1, 2, 3), frozen_stages=k),
           k, v) for k, v in PYRAMID_TNT.items()] +
         [('seaformer_t', lambda k: SeaFormer('t', frozen_stages=k), k, v)
          for k, v in SEAFORMER_T.items()] +
         [('seaformer_l', lambda k: SeaFormer('l', frozen_stages=k), k, v)
          for k, v in SEAFORMER_L.items()])


def _modules_under(model, prefixes):
    return [m for n, m in model.named_modules()
            if any(n == p or n.startswith(p + '.') for p in prefixes)]


@pytest.mark.parametrize('family,build,stages,expected', CASES,
                         ids=[f'{c[0]}-{c[2]}' for c in CASES])
def test_frozen_stages_freeze_exactly_their_parameters(family, build, stages, expected):
    model = build(stages)
    names = {n for n, _ in model.named_parameters()}
    want = _covered(names, expected)
    assert _frozen_prefixes(model) == want
    assert want != names or stages == max(k for c in CASES if c[0] == family for k in [c[2]])
    model.train()  # train() keeps them frozen and their norms in eval mode
    assert _frozen_prefixes(model) == want
    frozen_modules = _modules_under(model, expected)
    assert all(not m.training for m in frozen_modules)
    others = [m for n, m in model.named_modules()
              if n and m not in frozen_modules and not any(
                  n == p or p.startswith(n + '.') for p in expected)]
    assert others == [] or all(m.training for m in others)
    # a training step changes no frozen parameter
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    size = 64 if family == 'pyramid_tnt' else 32
    out = model(torch.randn(2, 3, size, size))
    if trainable:
        sum(o.float().mean() for o in out).backward()
        torch.optim.SGD(trainable, lr=0.1).step()
    else:
        assert not any(o.requires_grad for o in out)
    for n, p in model.named_parameters():
        if n in want:
            assert torch.equal(p, before[n]), n


def test_pyramid_tnt_frozen_norms_are_those_of_its_outputs_and_upsamples_train():
    model = PyramidTNT('ti', out_indices=(1, 3), upsample=True, frozen_stages=4)
    trainable = {n.split('.')[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {'upsamples'}
    model = PyramidTNT('ti', out_indices=(1, 3), frozen_stages=2)
    frozen = _frozen_prefixes(model)
    assert 'norm1.weight' in frozen and 'norm3.weight' not in frozen


def test_vt_resnet_deep_stem_freezes_the_stem():
    model = VTResNet(18, deep_stem=True, frozen_stages=0)
    assert {n.split('.')[0] for n in _frozen_prefixes(model)} == {'stem'}


@pytest.mark.parametrize('build', [lambda **k: VTResNet(18, **k),
                                   lambda **k: PyramidTNT('ti', **k),
                                   lambda **k: SeaFormer('t', **k)],
                         ids=['vt_resnet', 'pyramid_tnt', 'seaformer'])
def test_norm_eval_keeps_every_norm_in_eval_but_trains_its_parameters(build):
    model = build(norm_eval=True).train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(not m.training for m in norms)
    assert all(p.requires_grad for p in model.parameters())
    others = [m for m in model.modules() if not isinstance(m, _BatchNorm)]
    assert all(m.training for m in others)
    model.eval().train()
    assert all(not m.training for m in norms)
    plain = build(norm_eval=False).train()
    assert all(m.training for m in plain.modules())


EVAL_CASES = {
    # zero_init_residual off: a zero residual branch looks the same with drop path or without
    'vt_resnet': (lambda: VTResNet(18, drop_path_rate=0.5, out_indices=(2, 3),
                                   zero_init_residual=False), 32),
    'pyramid_tnt': (lambda: PyramidTNT('ti', drop_rate=0.5, attn_drop_rate=0.5,
                                       drop_path_rate=0.5, out_indices=(0, 3)), 64),
    'seaformer': (lambda: SeaFormer('t', drop_path_rate=0.5), 64),
}


@pytest.mark.parametrize('name', list(EVAL_CASES))
def test_eval_outputs_are_deterministic_and_train_mode_draws(name):
    build, size = EVAL_CASES[name]
    torch.manual_seed(0)
    model = build()
    model.init_weights()
    x = torch.randn(2, 3, size, size)
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    model.train()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert any(not torch.equal(u, v) for u, v in zip(a, b)), 'dropout / drop path inactive'
