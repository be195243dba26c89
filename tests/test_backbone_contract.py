"""One contract for every vt-mm backbone (issue 12): arch names, the deprecated ``pretrained``
argument, frozen stages, ``norm_eval``, ``train()`` returning ``self``."""
import pytest
import torch
import torch.nn as nn

from vt_mm.models.backbones import PyramidTNT, SeaFormer, VTResNet
from vt_mm.models.backbones.base import UnknownArchError

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
    with pytest.warns(UserWarning, match='pretrained is deprecated'):
        dst = BUILDERS[name](pretrained=str(ckpt))
    assert dst.init_cfg == dict(type='Pretrained', checkpoint=str(ckpt))
    dst.init_weights()
    for key, value in src.state_dict().items():
        assert torch.equal(value, dst.state_dict()[key]), key
    with pytest.raises(ValueError, match='either pretrained or init_cfg'):
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
