"""PyramidTNT: exact official parameters and keys, converter, any input size, options, errors."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from vt_mm.models.backbones import PyramidTNT
from vt_mm.models.backbones.pyramid_tnt import checkpoint_filter_fn

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# every key and shape of the official checkpoints (copied from the project's shared reference)
REF = osp.join(ROOT, 'tests', 'data', 'pyramid_tnt_official_state_dicts.json')
ARCHS = {
    'ti': ('ptnt_ti_patch16_192_in1k_cls', 10_578_529, 192),
    's': ('ptnt_s_patch16_256_in1k_cls', 31_953_200, 256),
    'm': ('ptnt_m_patch16_256_in1k_cls', 84_943_572, 256),
    'b': ('ptnt_b_patch16_256_in1k_cls', 156_990_072, 256),
}


@pytest.fixture(scope='module')
def official():
    with open(REF) as f:
        return json.load(f)


def _random_official(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        if k.endswith('num_batches_tracked'):
            out[k] = torch.tensor(10)
        elif k.endswith('running_var'):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g) * 0.05
    return out


@pytest.mark.parametrize('arch', list(ARCHS))
def test_params_and_keys_equal_official(arch, official):
    name, params, _ = ARCHS[arch]
    model = PyramidTNT(arch)
    with_head = sum(p.numel() for p in model.parameters()) + model.num_features * 1000 + 1000
    assert with_head == params  # the official count with the 1000-class head
    # the reported rounded figures: 10.58M / 31.95M / 84.94M / 156.99M
    assert round(with_head / 1e6, 2) == round(params / 1e6, 2)
    converted = checkpoint_filter_fn({k: torch.Size(v) for k, v in official[name].items()})
    backbone = {k: v for k, v in converted.items() if not k.startswith('head.')}
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(mine) == set(backbone)
    assert all(mine[k] == tuple(backbone[k]) for k in mine)


def test_converter_cli_and_pretrained_loading_give_identical_outputs(official, tmp_path):
    name, _, size = ARCHS['ti']
    state = _random_official(official[name])
    # wrapped as a timm training checkpoint, with DataParallel prefixes
    src = tmp_path / 'official.pth'
    torch.save({'state_dict': {'module.' + k: v for k, v in state.items()},
                'state_dict_ema': {'module.' + k: v + 1 for k, v in state.items()}}, src)
    dst = tmp_path / 'converted.pth'
    proc = subprocess.run([sys.executable, 'tools/model_converters/pyramid_tnt2mmpretrain.py',
                           str(src), str(dst)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    converted = torch.load(dst, weights_only=True)['state_dict']
    assert 'head.fc.weight' in converted and 'backbone.norm3.weight' in converted

    via_init = PyramidTNT('ti', init_cfg=dict(type='Pretrained', checkpoint=str(dst),
                                              prefix='backbone.'))
    via_init.init_weights()
    direct = PyramidTNT('ti')
    filtered = {k: v for k, v in checkpoint_filter_fn(state).items() if not k.startswith('head.')}
    result = direct.load_state_dict(filtered, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    backbone_keys = {k[len('backbone.'):] for k in converted if k.startswith('backbone.')}
    assert backbone_keys == set(direct.state_dict())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        a, b = via_init.eval()(x)[0], direct.eval()(x)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)

    # --ema picks the EMA weights
    subprocess.run([sys.executable, 'tools/model_converters/pyramid_tnt2mmpretrain.py', str(src),
                    str(dst), '--ema'], cwd=ROOT, check=True, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=ROOT))
    ema = torch.load(dst, weights_only=True)['state_dict']
    torch.testing.assert_close(ema['backbone.sentence_pos'], state['outer_pos'] + 1)


def test_classifier_from_converted_checkpoint_matches_official_computation(official):
    """backbone -> GAP -> Linear equals the official norm -> token mean -> head."""
    name, _, size = ARCHS['ti']
    state = _random_official(official[name], seed=1)
    model = PyramidTNT('ti').eval()
    converted = checkpoint_filter_fn(state)
    model.load_state_dict({k: v for k, v in converted.items() if not k.startswith('head.')})
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        feat = model(x)[0]  # B, D, H, W after norm3 (= official norm)
        logits = feat.mean((2, 3)) @ state['head.weight'].T + state['head.bias']
        tokens, _ = model.forward_features(x)[-1]
        expected = model.norm3(tokens).mean(1) @ state['head.weight'].T + state['head.bias']
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('hw,expected', [
    ((192, 192), [(24, 24), (12, 12), (6, 6), (3, 3)]),
    ((224, 224), [(28, 28), (14, 14), (7, 7), (4, 4)]),
    ((257, 391), [(33, 49), (17, 25), (9, 13), (5, 7)]),
    ((800, 1333), [(100, 167), (50, 84), (25, 42), (13, 21)]),
])
def test_any_input_size(hw, expected):
    model = PyramidTNT('ti', out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    assert [tuple(o.shape[2:]) for o in outs] == expected
    assert [o.shape[1] for o in outs] == [80, 160, 320, 320]
    assert all(torch.isfinite(o).all() for o in outs)


def test_native_size_uses_parameters_unchanged_and_other_sizes_interpolate():
    model = PyramidTNT('ti')
    stage = model.stages[0]
    assert stage.relative_bias((24, 24)) is stage.relative_pos
    bias = stage.relative_bias((28, 30))
    assert bias.shape == (1, 2, 28 * 30, 7 * 7)
    # bicubic resampling of a constant stays constant
    with torch.no_grad():
        stage.relative_pos.fill_(0.25)
    torch.testing.assert_close(stage.relative_bias((13, 17)), torch.full((1, 2, 221, 12), 0.25))


def test_fused_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    model = PyramidTNT('ti', out_indices=(0, 1, 2, 3)).eval()
    model.init_weights()
    x = torch.randn(2, 3, 200, 232)
    with torch.no_grad():
        fused = model(x)
        model.set_fused_attn(False)
        eager = model(x)
    for a, b in zip(fused, eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_detection_upsampling_strides_4_to_32():
    model = PyramidTNT('ti', out_indices=(0, 1, 2, 3), upsample=True).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 256, 320))
    assert [tuple(o.shape[2:]) for o in outs] == [(64, 80), (32, 40), (16, 20), (8, 10)]
    assert len(model.upsamples) == 4


def test_frozen_stages_norm_eval_and_checkpointing():
    model = PyramidTNT('ti', out_indices=(0, 1, 2, 3), frozen_stages=2, norm_eval=True,
                       upsample=True).train()
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert not model.sentence_pos.requires_grad
    assert not any(p.requires_grad for p in model.stages[1].parameters())
    assert all(p.requires_grad for p in model.stages[2].parameters())
    assert not model.stem.common.bn.training and not model.upsamples[0][1].training
    torch.manual_seed(0)
    plain = PyramidTNT('ti', out_indices=(1, 3), drop_path_rate=0.).train()
    ckpt = PyramidTNT('ti', out_indices=(1, 3), drop_path_rate=0., with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 192, 192)
    out_a, out_b = plain(x), ckpt(x)
    sum(o.sum() for o in out_a).backward()
    sum(o.sum() for o in out_b).backward()
    torch.testing.assert_close(out_a[1], out_b[1])
    ga = plain.stages[2].blocks[0].attn.q.weight.grad
    gb = ckpt.stages[2].blocks[0].attn.q.weight.grad
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


def test_bad_input_errors():
    with pytest.raises(KeyError, match=r"PyramidTNT: unknown arch 'huge'.*'base'.*'tiny'.*'ti'"):
        PyramidTNT('huge')
    with pytest.raises(ValueError, match='out_indices'):
        PyramidTNT('ti', out_indices=(4, ))
    model = PyramidTNT('ti')
    with pytest.raises(ValueError, match='3 input channels, got an input with 1'):
        model(torch.randn(1, 1, 192, 192))
    with pytest.raises(ValueError, match='too small'):
        model(torch.randn(1, 3, 16, 16))


def test_builds_by_name_in_mmdet_and_mmpretrain():
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as CLS
    for registry in (DET, CLS):
        assert isinstance(registry.build(dict(type='PyramidTNT', arch='ti')), PyramidTNT)
    model = PyramidTNT('ti', pretrained=None)
    assert model.init_cfg is None
    assert isinstance(PyramidTNT('ti', pretrained='x.pth').init_cfg, dict)


def test_detection_variant_only_lacks_its_new_layers(official):
    name, _, _ = ARCHS['ti']
    converted = checkpoint_filter_fn({k: torch.zeros(v) for k, v in official[name].items()})
    converted = {k: v for k, v in converted.items() if not k.startswith('head.')}
    det = PyramidTNT('ti', out_indices=(0, 1, 2, 3), upsample=True)
    result = det.load_state_dict(converted, strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(
        k.startswith(('norm0.', 'norm1.', 'norm2.', 'upsamples.')) for k in result.missing_keys)


def test_inference_passes_a_grad_free_mask_to_fused_attention(monkeypatch):
    """A mask requiring grad drops SDPA to its slow math backend; inference must avoid that."""
    import torch.nn.functional as F
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        if attn_mask is not None:
            seen.append(attn_mask.requires_grad)
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', spy)
    model = PyramidTNT('ti').eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 192, 192))
    assert seen and not any(seen)
    seen.clear()
    model.train()
    model(torch.randn(1, 3, 192, 192))[0].sum().backward()
    assert seen and all(seen)  # training keeps the gradient of the relative bias
    assert model.stages[0].relative_pos.grad is not None
