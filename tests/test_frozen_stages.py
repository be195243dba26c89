"""frozen_stages and norm_eval of every backbone, through the parameters each value must freeze
and the ones it must not (expected tables written out here, not computed by the backbone's own
helper), and train/eval modes: eval outputs are deterministic, train-mode dropout is not."""
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

import vt_mm  # noqa: F401
from vt_mm.models.backbones import PyramidTNT, SeaFormer, VTResNet


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
