"""PyramidTNT: exact official parameters and keys, converter, any input size, options, errors."""
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import ROOT
from helpers.det import coco_batch, loss_step
from mmengine.config import Config
from mmengine.registry import init_default_scope

from vt_mm.datasets.demo_shapes import SHAPE_CLASSES, make_demo_coco
from vt_mm.models.backbones import PyramidTNT
from vt_mm.models.backbones.pyramid_tnt import (
    SRAttention,
    checkpoint_filter_fn,
    interpolate_grid,
    mlp,
)

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


@pytest.mark.parametrize('arch', ['ti', 's'])
def test_strict_load_moves_every_value_one_to_one(arch, official):
    """Values, not only keys and shapes: after a strict load of converted random official
    weights, every backbone tensor holds exactly one official tensor, and every official tensor
    but the classifier went somewhere."""
    from helpers.converters import assert_values_moved_one_to_one
    name = ARCHS[arch][0]
    state = _random_official(official[name], seed=4)
    model = PyramidTNT(arch)
    result = model.load_state_dict(checkpoint_filter_fn(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_values_moved_one_to_one(model.state_dict(),
                                   {k: v for k, v in state.items() if not k.startswith('head.')})


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
    with pytest.raises(ValueError, match=r'^PyramidTNT was built for 3 input channels, got an '
                       r'input with 1 \(shape \(1, 1, 40, 48\)\)$'):
        model(torch.randn(1, 1, 40, 48))
    with pytest.raises(ValueError, match=r'^PyramidTNT expects images \(N, C, H, W\), got '
                       r'\(3, 40, 48\)$'):
        model(torch.randn(3, 40, 48))
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


# --- a functional reference: the official computation on the official state dict -----------
# Written from the official layout (tests/data/pyramid_tnt_official_state_dicts.json) and the
# authors' pyramid_tnt.py (Stem, Block, Attention with spatial reduction and relative position,
# Word/SentenceAggregation), with torch.nn.functional only: nothing of vt-mm's modules, so a
# converter that maps a key onto another tensor of the same shape cannot agree with it.
_F = torch.nn.functional


def _ref_linear(w, p, x, bias=True):
    return _F.linear(x, w[f'{p}.weight'], w.get(f'{p}.bias') if bias else None)


def _ref_norm(w, p, x):
    return _F.layer_norm(x, x.shape[-1:], w[f'{p}.weight'], w[f'{p}.bias'], eps=1e-5)


def _ref_conv_bn_relu(w, conv, bn, x, stride):
    x = _F.conv2d(x, w[f'{conv}.weight'], w[f'{conv}.bias'], stride=stride, padding=1)
    x = _F.batch_norm(x, w[f'{bn}.running_mean'], w[f'{bn}.running_var'], w[f'{bn}.weight'],
                      w[f'{bn}.bias'], training=False, eps=1e-5)
    return _F.relu(x)


def _ref_attention(w, p, x, heads, hw=None, sr=1, bias=None):
    b, n, c = x.shape
    q = _F.linear(x, w[f'{p}.q.weight']).reshape(b, n, heads, c // heads).transpose(1, 2)
    src = x
    if sr > 1:
        grid = x.transpose(1, 2).reshape(b, c, *hw)
        src = _F.avg_pool2d(grid, sr, sr).reshape(b, c, -1).transpose(1, 2)
        src = _ref_norm(w, f'{p}.norm', _ref_linear(w, f'{p}.linear', src))
    kv = _F.linear(src, w[f'{p}.kv.weight']).reshape(b, -1, 2, heads, c // heads)
    k, v = kv.permute(2, 0, 3, 1, 4)
    attn = q @ k.transpose(-2, -1) * (c // heads)**-0.5
    if bias is not None:
        attn = attn + bias
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
    return _ref_linear(w, f'{p}.proj', out)


def _ref_mlp(w, p, x):
    return _ref_linear(w, f'{p}.fc2', _F.gelu(_ref_linear(w, f'{p}.fc1', x)))


def official_pyramid_tnt_logits(w, x, heads, word_heads):
    """Official PyramidTNT classifier logits at the native size, functionally."""
    b = x.shape[0]
    common = _ref_conv_bn_relu(w, 'patch_embed.common_conv.0', 'patch_embed.common_conv.1', x, 2)
    words = _ref_conv_bn_relu(w, 'patch_embed.inner_convs.0', 'patch_embed.inner_convs.1',
                              common, 1)
    sent = common
    for conv, bn, stride in ((0, 1, 2), (3, 4, 2), (6, 7, 1)):
        sent = _ref_conv_bn_relu(w, f'patch_embed.outer_convs.{conv}',
                                 f'patch_embed.outer_convs.{bn}', sent, stride)
    hw = (x.shape[2] // 8, x.shape[3] // 8)
    word_dim = words.shape[1]
    words = _F.unfold(words, 4, stride=4).transpose(1, 2)
    words = words.reshape(b * hw[0] * hw[1], word_dim, 16).transpose(1, 2) + w['inner_pos']
    sent = sent.permute(0, 2, 3, 1).reshape(b, hw[0] * hw[1], -1) + w['outer_pos']
    for i in range(4):
        if i > 0:
            # word aggregation: 2x2 neighbouring sentences' words -> one 8x8 grid -> stride-2 conv
            p = f'word_merges.{i - 1}'
            c = words.shape[-1]
            g = _ref_norm(w, f'{p}.norm', words).reshape(-1, hw[0], hw[1], 4, 4, c)
            g = torch.cat([torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2]], 3),
                           torch.cat([g[:, 0::2, 1::2], g[:, 1::2, 1::2]], 3)], 4)
            g = g.reshape(-1, 8, 8, c).permute(0, 3, 1, 2)
            g = _F.conv2d(g, w[f'{p}.conv.0.weight'], w[f'{p}.conv.0.bias'], stride=2, padding=1)
            words = g.reshape(g.shape[0], g.shape[1], 16).transpose(1, 2)
            p = f'sentence_merges.{i - 1}'
            s = _ref_norm(w, f'{p}.norm', sent).transpose(1, 2).reshape(b, -1, *hw)
            s = _F.conv2d(s, w[f'{p}.conv.0.weight'], w[f'{p}.conv.0.bias'], stride=2, padding=1)
            hw = (s.shape[2], s.shape[3])
            sent = s.flatten(2).transpose(1, 2)
        stage = f'stages.{i}'
        rel = w[f'{stage}.relative_pos']
        j = 0
        while f'{stage}.blocks.{j}.outer_norm1.weight' in w:
            p = f'{stage}.blocks.{j}'
            n = sent.shape[1]
            if f'{p}.inner_norm1.weight' in w:
                def per_word(t, norm):
                    return _ref_norm(w, norm, t.reshape(b, n, -1)).reshape(b * n, 16, -1)
                words = words + _ref_attention(w, f'{p}.inner_attn',
                                               per_word(words, f'{p}.inner_norm1'), word_heads[i])
                words = words + _ref_mlp(w, f'{p}.inner_mlp', per_word(words, f'{p}.inner_norm2'))
                proj = _F.linear(_ref_norm(w, f'{p}.proj_norm1', words.reshape(b, n, -1)),
                                 w[f'{p}.proj.weight'])
                sent = sent + _ref_norm(w, f'{p}.proj_norm2', proj)
            sent = sent + _ref_attention(w, f'{p}.outer_attn', _ref_norm(w, f'{p}.outer_norm1',
                                                                          sent),
                                         heads[i], hw, (4, 2, 1, 1)[i], rel)
            sent = sent + _ref_mlp(w, f'{p}.outer_mlp', _ref_norm(w, f'{p}.outer_norm2', sent))
            j += 1
    feat = _ref_norm(w, 'norm', sent).mean(1)
    return _F.linear(feat, w['head.weight'], w['head.bias'])


def _official_weights(official, name, seed):
    """Random official weights with non-trivial LayerNorm / BN affines and statistics."""
    state = _random_official(official[name], seed=seed)
    for k, v in state.items():
        if k.endswith('norm.weight') or 'norm1.weight' in k or 'norm2.weight' in k or (
                k.endswith('.weight') and v.dim() == 1):
            state[k] = 1 + v * 4
    return state


def _vtmm_logits(arch, state, x):
    model = PyramidTNT(arch).eval()
    converted = checkpoint_filter_fn(state)
    model.load_state_dict({k: v for k, v in converted.items() if not k.startswith('head.')},
                          strict=True)
    with torch.no_grad():
        return model(x)[0].mean((2, 3)) @ state['head.weight'].T + state['head.bias']


@pytest.mark.parametrize('arch', ['ti', 's'])
def test_converted_official_weights_give_the_official_outputs(official, arch):
    """The converter's output in vt-mm's PyramidTNT computes what the official model computes
    from the same random official weights (the functional reference above), at the native
    size: catches a converter that maps a key onto another tensor of the same shape."""
    name, _, size = ARCHS[arch]
    state = _official_weights(official, name, seed=2)
    heads = [official[name][f'stages.{i}.relative_pos'][1] for i in range(4)]
    word_heads = [1, 2, 4, 4] if arch == 'ti' else [2, 4, 8, 8]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = official_pyramid_tnt_logits(state, x, heads, word_heads)
    got = _vtmm_logits(arch, state, x)
    assert expected.abs().max() > 0.1  # not a comparison of near-zeros
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('swap', [('outer_norm1.', 'outer_norm2.'),
                                  ('inner_norm1.', 'inner_norm2.'),
                                  ('proj_norm1.', 'inner_norm1.')])
def test_a_same_shape_key_swap_in_the_converter_is_caught(official, monkeypatch, swap):
    """The reference fails a converter whose renames send one official tensor to another
    same-shaped place (the mutation 'outer_norm1. -> norm2.' passed every test before)."""
    from vt_mm.models.backbones import pyramid_tnt
    a, b = swap
    renames = dict(pyramid_tnt._BLOCK_RENAMES)
    renames[a], renames[b] = renames[b], renames[a]
    order = [k for k, _ in pyramid_tnt._BLOCK_RENAMES]
    monkeypatch.setattr(pyramid_tnt, '_BLOCK_RENAMES', tuple((k, renames[k]) for k in order))
    name, _, size = ARCHS['ti']
    state = _official_weights(official, name, seed=3)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = official_pyramid_tnt_logits(state, x, [2, 4, 8, 8], [1, 2, 4, 4])
    got = _vtmm_logits('ti', state, x)
    assert not torch.allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_converter_skips_the_classifier_wherever_it_is_listed(official):
    """The classifier keys are dropped without stopping the conversion of the keys after them."""
    shapes = official[ARCHS['ti'][0]]
    head = {k: v for k, v in shapes.items() if k.startswith('head.')}
    rest = {k: v for k, v in shapes.items() if not k.startswith('head.')}
    state = _random_official({**head, **rest})
    converted = checkpoint_filter_fn(state)
    assert len(converted) == len(rest) and not any(k.startswith('head.') for k in converted)
    result = PyramidTNT('ti').load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize('arch,params', [('ti', 10_578_529), ('s', 31_953_200), ('m', 84_943_572),
                                         ('b', 156_990_072)])
def test_imagenet_configs_build_the_official_classifier(arch, params):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(f'configs/pyramid_tnt/pyramid-tnt-{arch}_8xb128_in1k.py')
    assert cfg.data_preprocessor.mean == [127.5] * 3 and cfg.data_preprocessor.std == [127.5] * 3
    assert cfg.optim_wrapper.optimizer.type == 'AdamW' and cfg.optim_wrapper.optimizer.lr == 1e-3
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05 and cfg.train_cfg.max_epochs == 300
    assert cfg.param_scheduler[0].end == 20
    size = cfg.img_size
    assert cfg.test_pipeline[-2].crop_size == size and cfg.train_pipeline[1].scale == size
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == params
    if arch == 'ti':
        model.eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, size, size), mode='tensor').shape == (1, 1000)


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    make_demo_coco(str(root), 'train', num_images=2, size=(160, 128), seed=0)
    return str(root)


@pytest.mark.parametrize('config,with_mask', [
    ('configs/pyramid_tnt/retinanet_pyramid-tnt-s_fpn_1x_coco.py', False),
    ('configs/pyramid_tnt/mask-rcnn_pyramid-tnt-s_fpn_1x_coco.py', True),
])
def test_detector_loss_and_predict_on_generated_coco(config, with_mask, coco):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = Config.fromfile(config)
    assert cfg.model.backbone.type == 'PyramidTNT' and cfg.model.backbone.upsample
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.lr == 1e-4 and optimizer.weight_decay == 0.05
    assert cfg.train_pipeline[2].scale == (1333, 800)
    cfg.model.backbone.init_cfg = None  # no ImageNet weights offline
    if 'bbox_head' in cfg.model:
        cfg.model.bbox_head.num_classes = len(SHAPE_CLASSES)
    else:
        cfg.model.roi_head.bbox_head.num_classes = len(SHAPE_CLASSES)
        cfg.model.roi_head.mask_head.num_classes = len(SHAPE_CLASSES)
    model = MODELS.build(cfg.model)
    model.init_weights()
    batch = coco_batch(coco, with_mask)
    losses = loss_step(model, batch)
    assert model.backbone.stages[0].blocks[0].attn.q.weight.grad is not None
    if with_mask:
        assert 'loss_mask' in losses
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(batch, False), mode='predict')
    assert len(results) == 2 and 'bboxes' in results[0].pred_instances


def test_official_initialisation_of_every_parameter_kind():
    """Without init_cfg: trunc-normal(std .02) position embeddings and linears with zero biases,
    He-normal convolutions (std sqrt(2 / fan_out), mean 0), LayerNorms at 1 / 0."""
    torch.manual_seed(0)
    model = PyramidTNT('ti', out_indices=(0, 1, 2, 3), upsample=True)
    model.init_weights()
    for pos in (model.sentence_pos, model.word_pos):  # 576 x 80 and 16 x 5 values
        assert 0.014 < pos.std().item() < 0.026 and pos.abs().max().item() < 0.1
        assert abs(pos.mean().item()) < 0.01
    checked = set()
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            if m.weight.numel() >= 1000:
                assert 0.017 < m.weight.std().item() < 0.023, name
            if m.bias is not None:
                assert not m.bias.any(), name
            checked.add('linear')
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            w = m.weight
            if w.numel() >= 2000:
                std = math.sqrt(2.0 / fan_out)
                assert 0.9 * std < w.std().item() < 1.1 * std, name
                assert abs(w.mean().item()) < 0.1 * std, name
            if m.bias is not None:
                assert not m.bias.any(), name
            checked.add(type(m).__name__)
        elif isinstance(m, nn.LayerNorm):
            assert (m.weight == 1).all() and not m.bias.any(), name
            checked.add('norm')
    assert checked == {'linear', 'Conv2d', 'ConvTranspose2d', 'norm'}


@pytest.mark.parametrize('kwargs,expected', [
    ({}, (False, 0.0, 0.0, True)),
    (dict(qkv_bias=True, attn_drop_rate=0.1, drop_rate=0.2, fused_attn=False),
     (True, 0.1, 0.2, False)),
])
def test_attention_settings_reach_the_word_and_sentence_attentions(kwargs, expected):
    """qkv_bias, attn_drop_rate, drop_rate and fused_attn reach every attention, the words'
    (one per stage's first block) as well as the sentences', at their defaults and set."""
    model = PyramidTNT('ti', **kwargs)
    attentions = [m for m in model.modules() if isinstance(m, SRAttention)]
    words = [blk.word_attn for stage in model.stages for blk in stage.blocks if blk.with_words]
    assert len(words) == 4 and len(attentions) == 17
    for attn in attentions:
        assert ((attn.q.bias is not None), (attn.kv.bias is not None), attn.attn_drop.p,
                attn.proj_drop.p, attn.fused_attn) == (expected[0], ) + expected


def test_constructor_defaults_custom_arch_and_schedules():
    """PyramidTNT() is PyramidTNT-S without checkpointing; a custom arch names every required
    key it lacks and takes sr_ratios [4, 2, 1, 1] when they are left out; a stage of more
    than 6 blocks has words in its first two blocks (6: the first only); stochastic depth
    rises linearly over all blocks; a non-square native size sizes each stage's bias."""
    from mmcv.cnn.bricks import DropPath
    model = PyramidTNT()
    assert [len(s.blocks) for s in model.stages] == [2, 8, 4, 2] and model.num_features == 512
    assert model.with_cp is False
    tiny = dict(PyramidTNT.arch_zoo['tiny'])
    with pytest.raises(ValueError, match=re.escape(
            "PyramidTNT: a custom arch dict is missing ['word_heads']; it needs ['depths', "
            "'dims', 'num_heads', 'word_dims', 'word_heads']")):
        PyramidTNT({k: v for k, v in tiny.items() if k != 'word_heads'})
    custom = {k: v for k, v in tiny.items() if k != 'sr_ratios'}
    custom['depths'] = [2, 7, 3, 2]
    model = PyramidTNT(custom, drop_path_rate=0.13)
    assert [s.sr_ratio for s in model.stages] == [4, 2, 1, 1]
    assert [[b.with_words for b in s.blocks] for s in model.stages] == [
        [True, False], [True, True] + [False] * 5, [True, False, False], [True, False]]
    blocks = [b for s in model.stages for b in s.blocks]
    assert isinstance(blocks[0].drop_path, nn.Identity)
    assert all(type(b.drop_path) is DropPath for b in blocks[1:])
    assert [b.drop_path.drop_prob for b in blocks[1:]] == pytest.approx(
        [0.13 * i / 13 for i in range(1, 14)])
    model = PyramidTNT('ti', img_size=(224, 160))
    for stage in model.stages:
        (h, w), sr = stage.native_hw, stage.sr_ratio
        assert stage.native_kv_hw == (h // sr, w // sr)
        assert stage.relative_pos.shape[2:] == (h * w, (h // sr) * (w // sr))
    assert model.stages[0].native_hw == (28, 20)
    assert model.img_size == (224, 160) and model.sentence_pos.shape == (1, 28 * 20, 80)
    sizeless = {k: v for k, v in custom.items() if k != 'img_size'}
    model = PyramidTNT(sizeless, out_indices=3)  # no img_size in the arch: 224
    assert model.img_size == (224, 224) and model.out_indices == [3]
    assert model.arch == dict(sizeless, sr_ratios=[4, 2, 1, 1])
    for name in ('drop_rate', 'attn_drop_rate', 'drop_path_rate'):
        with pytest.raises(ValueError, match=f'^PyramidTNT: {name} '):
            PyramidTNT('ti', **{name: 1.5})
    assert PyramidTNT(dict(tiny, dims=[80, 160, 320, 400])).num_features == 400  # the last
    # upsample=True (detection): per output, 2x transposed conv, norm, GELU, 3x3 conv without
    # bias, norm, GELU at the output's width
    model = PyramidTNT('ti', out_indices=(1, 3), upsample=True)
    for up, d in zip(model.upsamples, (160, 320)):
        assert [type(m).__name__ for m in up] == [
            'ConvTranspose2d', 'BatchNorm2d', 'TraceableGELU', 'Conv2d', 'BatchNorm2d',
            'TraceableGELU']
        assert (up[0].in_channels, up[0].out_channels, up[0].kernel_size, up[0].stride) == (
            d, d, (2, 2), (2, 2))
        assert (up[3].in_channels, up[3].kernel_size, up[3].padding, up[3].bias) == (
            d, (3, 3), (1, 1), None)
        assert up[1].num_features == up[4].num_features == d


def test_set_fused_attn_switches_every_attention_both_ways():
    model = PyramidTNT('ti')
    attentions = [m for m in model.modules() if isinstance(m, SRAttention)]
    assert len(attentions) == 2 + 6 + 3 + 2 + 4  # every block's, one word attention per stage
    model.set_fused_attn(False)
    assert all(m.fused_attn is False for m in attentions)
    model.set_fused_attn(True)
    assert all(m.fused_attn is True for m in attentions)


def test_fused_attention_drops_out_only_in_training_and_passes_its_scale():
    """The fused kernel gets the attention dropout in training and 0 in eval, and the scale as
    a number (not computed from shapes in an exported graph)."""
    torch.manual_seed(0)
    attn = SRAttention(16, 4, attn_drop=0.5, sr_ratio=2)
    x = torch.randn(2, 16, 16)
    with torch.no_grad():
        attn.train()
        assert not torch.equal(attn(x, (4, 4)), attn(x, (4, 4)))
        attn.eval()
        torch.testing.assert_close(attn(x, (4, 4)), attn(x, (4, 4)), rtol=0, atol=0)

    class Wrap(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, x):
            return self.attn(x, (4, 4))

    with torch.no_grad(), pytest.warns(FutureWarning):  # torch.jit.trace is deprecated
        graph = torch.jit.trace(Wrap(), (x, )).inlined_graph
    sdpa = [n for n in graph.nodes() if n.kind() == 'aten::scaled_dot_product_attention']
    assert len(sdpa) == 1
    scale = list(sdpa[0].inputs())[-2]
    assert scale.node().kind() == 'prim::Constant' and scale.toIValue() == 0.5  # 4 ** -0.5


@pytest.mark.parametrize('with_cp,grad,calls', [(False, True, 0), (True, True, 13),
                                                 (True, False, 0)])
def test_gradient_checkpointing_runs_only_when_asked_and_gradients_flow(monkeypatch, with_cp, grad,
                                                                       calls):
    """``with_cp`` checkpoints each of the 13 blocks of PyramidTNT-Ti when autograd records;
    without it (or under no_grad) the blocks run plainly: checkpointing costs a second forward."""
    from vt_mm.models.backbones import pyramid_tnt
    seen = []

    def recording(fn, *args, **kwargs):
        seen.append(fn)
        return fn(*args)

    monkeypatch.setattr(pyramid_tnt.cp, 'checkpoint', recording)
    model = PyramidTNT('ti', drop_path_rate=0., with_cp=with_cp).train()
    with torch.set_grad_enabled(grad):
        model(torch.randn(1, 3, 64, 64))
    assert len(seen) == calls


def test_gradient_checkpointing_says_which_kind_and_trains_every_block():
    """Non-reentrant checkpointing, named (torch warns when the kind is left to its default),
    with gradients reaching the first block's parameters."""
    torch.manual_seed(0)
    model = PyramidTNT('ti', drop_path_rate=0., with_cp=True).train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        (out, ) = model(torch.randn(1, 3, 64, 64))
        # weighted: a plain sum of a LayerNorm's output over its channels has zero gradient
        (out * torch.randn_like(out)).sum().backward()
    assert not [w for w in caught if 'use_reentrant' in str(w.message)]
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.stages[0].blocks[0].mlp.parameters())
    assert model.stages[0].blocks[0].attn.q.weight.grad.abs().sum() > 0


def test_interpolate_grid_resizes_each_flattened_grid_as_an_image():
    """Against F.interpolate (bicubic, align_corners=False) on the grids written out as images,
    with every side different so that a swapped axis shows."""
    torch.manual_seed(0)
    pos = torch.randn(1, 3 * 5, 4)  # (1, N, C) on a 3x5 grid
    want = F.interpolate(pos.transpose(1, 2).reshape(1, 4, 3, 5), size=(6, 7), mode='bicubic',
                         align_corners=False).reshape(1, 4, 42).transpose(1, 2)
    torch.testing.assert_close(interpolate_grid(pos, (3, 5), (6, 7), dim=1), want)
    bias = torch.randn(1, 2, 3 * 5, 2 * 4)  # (1, heads, queries 3x5, keys 2x4)
    rows = F.interpolate(bias.permute(0, 1, 3, 2).reshape(1, 16, 3, 5), size=(4, 6),
                         mode='bicubic', align_corners=False)
    want = rows.reshape(1, 2, 8, 24).permute(0, 1, 3, 2)
    torch.testing.assert_close(interpolate_grid(bias, (3, 5), (4, 6), dim=2), want)
    keys = F.interpolate(bias.reshape(1, 30, 2, 4), size=(3, 3), mode='bicubic',
                         align_corners=False).reshape(1, 2, 15, 9)
    torch.testing.assert_close(interpolate_grid(bias, (2, 4), (3, 3), dim=3), keys)
    assert interpolate_grid(bias, (3, 5), (3, 5), dim=2) is bias  # eager, same size: untouched


@pytest.mark.parametrize('shape', [(24, 64), (64, 24)])
def test_the_smallest_input_side_is_25_pixels_on_either_axis(shape):
    """25 px is padded to 32, whose 4x4 first-stage grid holds one 4x4 reduction window; 24 px
    gives a 3x3 grid and is refused with the minimum named."""
    model = PyramidTNT('ti').eval()
    with pytest.raises(ValueError, match=r'too small for PyramidTNT \(need at least 25 pixels '
                       r'per side'):
        model(torch.randn(1, 3, *shape))
    with torch.no_grad():
        (out, ) = model(torch.randn(1, 3, *[25 if s == 24 else s for s in shape]))
    assert out.shape[:2] == (1, 320)


def test_sr_attention_defaults_options_and_errors():
    """The official Attention's defaults (no q/kv bias, no dropout, no spatial reduction, the
    fused kernel), each option reaching its layer, and the divisibility message."""
    plain = SRAttention(8, 2)
    assert plain.q.bias is None and plain.kv.bias is None and plain.proj.bias is not None
    assert plain.attn_drop.p == 0 and plain.proj_drop.p == 0 and plain.sr_ratio == 1
    assert not hasattr(plain, 'sr') and plain.fused_attn is True and plain.scale == 0.5
    full = SRAttention(8, 2, qkv_bias=True, attn_drop=0.1, proj_drop=0.2, sr_ratio=2,
                       fused_attn=False)
    assert full.q.bias is not None and full.kv.bias is not None
    assert (full.attn_drop.p, full.proj_drop.p, full.fused_attn) == (0.1, 0.2, False)
    assert isinstance(full.sr, nn.Linear) and isinstance(full.sr_norm, nn.LayerNorm)
    with pytest.raises(ValueError, match=r'^dim 10 must be divisible by num_heads 3$'):
        SRAttention(10, 3)


def test_the_mlp_drops_out_in_training_only():
    torch.manual_seed(0)
    ffn = mlp(8, 16, 0.5)
    x = torch.randn(4, 8)
    ffn.train()
    assert not torch.equal(ffn(x), ffn(x))
    ffn.eval()
    assert torch.equal(ffn(x), ffn(x))
    no_drop = mlp(8, 16, 0.).train()
    assert torch.equal(no_drop(x), no_drop(x))
