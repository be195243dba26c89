"""The VT layers' construction contract, written down so that a changed default, a dropped
``groups=`` or ``bias=``, a config that is not passed through, or an error message that names
the wrong argument fails a test (the mutation run of issue "Tests that catch the bug" found
these unguarded: docs/testing.md). Shapes and defaults follow the paper (Wu et al., equations
and appendix) and FACTS.md; the traced (ONNX) paths are compared with the eager ones."""
import inspect

import pytest
import torch
import torch.nn.functional as F

from vt_mm.models.layers import (
    FilterTokenizer,
    RecurrentTokenizer,
    TokenPositionEncoding,
    TokenProjector,
    TokenTransformer,
    VTModule,
)
from vt_mm.models.layers import visual_tokens as vt


def _shape(conv):
    return tuple(conv.weight.shape), conv.bias is not None


def test_paper_defaults():
    """The defaults are the paper's: one head, dense (groups 1) projections, a 7x7 grid and 32
    position channels, the filter tokenizer with position encoding and projector, no
    transformer value projection (K Q^T only, FACTS.md), a dense W_{T->R}."""

    def defaults(cls):
        return {k: p.default for k, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}

    assert defaults(FilterTokenizer) == dict(value_groups=1, scale_logits=True, init_cfg=None)
    assert defaults(RecurrentTokenizer) == dict(num_heads=1, value_groups=1, weight_groups=1,
                                                refresh='all', init_cfg=None)
    assert defaults(TokenPositionEncoding) == dict(pos_channels=32, grid_size=7, fuse_groups=1,
                                                   init_cfg=None)
    assert defaults(TokenTransformer) == dict(num_heads=1, qk_channels=None, qkv_groups=1,
                                              with_value=False, ffn_channels=None, ffn_groups=1,
                                              init_cfg=None)
    assert defaults(TokenProjector) == dict(num_heads=1, qk_channels=None, query_groups=1,
                                            key_groups=1, value_groups=1, init_cfg=None)
    d = defaults(VTModule)
    assert (d['tokenizer'], d['with_pos_encoding'], d['with_projector']) == ('filter', True,
                                                                             True)


def test_layer_shapes_and_biases_with_groups():
    """Weights (out, in / groups, 1) and which projections carry a bias: W_A and W_V have one
    (1x1 convs), W_Q, W_K and the position map W_{A->P} have none."""
    f = FilterTokenizer(16, 8, 4, value_groups=2)
    assert _shape(f.token_coef) == ((4, 16, 1, 1), True)
    assert _shape(f.value) == ((8, 8, 1), True)
    r = RecurrentTokenizer(16, 8, num_heads=2, value_groups=4, weight_groups=2)
    assert _shape(r.token_to_weight) == ((16, 4, 1), True)
    assert _shape(r.value) == ((8, 4, 1), True)
    p = TokenPositionEncoding(8, pos_channels=8, grid_size=5, fuse_groups=2)
    assert _shape(p.attn_to_pos) == ((8, 25), False)
    assert _shape(p.fuse) == ((8, 8, 1), True)
    t = TokenTransformer(8, num_heads=2, qk_channels=4, qkv_groups=2, with_value=True,
                         ffn_channels=12, ffn_groups=2)
    assert _shape(t.key) == ((4, 4, 1), False) and _shape(t.query) == ((4, 4, 1), False)
    assert _shape(t.value) == ((8, 4, 1), True)
    convs = [m for m in t.ffn.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [_shape(c) for c in convs] == [((12, 4, 1), True), ((8, 6, 1), True)]
    plain = TokenTransformer(8)
    assert plain.value is None and plain.qk_channels == 8
    assert [c.weight.shape[0] for c in plain.ffn.modules()
            if isinstance(c, torch.nn.Conv1d)] == [8, 8]  # ffn_channels defaults to C_T
    assert not hasattr(TokenTransformer(8, ffn_channels=0), 'ffn') or \
        TokenTransformer(8, ffn_channels=0).ffn is None
    j = TokenProjector(16, 8, num_heads=2, qk_channels=8, query_groups=2, key_groups=4,
                       value_groups=2)
    assert _shape(j.query) == ((8, 8, 1, 1), False)
    assert _shape(j.key) == ((8, 2, 1), False)
    assert _shape(j.value) == ((16, 4, 1), True)
    assert j.reassociate is True and TokenProjector(16, 8).qk_channels == 16


def test_vt_module_passes_every_config_through():
    m = VTModule(16, 8, 4, tokenizer_cfg=dict(value_groups=2), pos_cfg=dict(grid_size=5),
                 transformer_cfg=dict(num_heads=2), projector_cfg=dict(num_heads=4))
    assert isinstance(m.tokenizer, FilterTokenizer) and m.tokenizer.value.groups == 2
    assert m.pos_encoding.grid_size == 5
    assert m.transformer.num_heads == 2 and m.projector.num_heads == 4
    r = VTModule(16, 8, 4, tokenizer='recurrent', tokenizer_cfg=dict(num_heads=2),
                 with_pos_encoding=False, with_projector=False)
    assert isinstance(r.tokenizer, RecurrentTokenizer) and r.tokenizer.num_heads == 2
    assert r.pos_encoding is None and r.projector is None
    x, tokens = torch.randn(2, 16, 6, 5), torch.randn(2, 8, 4)
    out = r(x, tokens, with_attention=True)
    assert len(out) == 3 and out[0] is x and out[2].shape == (2, 4, 6, 5)
    assert len(r(x, tokens)) == 2
    with pytest.raises(ValueError, match="tokenizer must be 'filter' or 'recurrent'"):
        VTModule(16, 8, 4, tokenizer='conv')


ARGUMENTS = [
    # (class, valid kwargs, argument, bad value): every integer argument of every layer
    (FilterTokenizer, dict(in_channels=8, token_channels=8, num_tokens=4), 'in_channels', 0),
    (FilterTokenizer, dict(in_channels=8, token_channels=8, num_tokens=4), 'token_channels', 0),
    (FilterTokenizer, dict(in_channels=8, token_channels=8, num_tokens=4), 'num_tokens', 0),
    (FilterTokenizer, dict(in_channels=8, token_channels=8, num_tokens=4), 'value_groups', 0),
    (RecurrentTokenizer, dict(in_channels=8, token_channels=8), 'in_channels', 0),
    (RecurrentTokenizer, dict(in_channels=8, token_channels=8), 'token_channels', 0),
    (RecurrentTokenizer, dict(in_channels=8, token_channels=8), 'num_heads', 0),
    (RecurrentTokenizer, dict(in_channels=8, token_channels=8), 'value_groups', 0),
    (RecurrentTokenizer, dict(in_channels=8, token_channels=8), 'weight_groups', 0),
    (TokenPositionEncoding, dict(token_channels=8), 'token_channels', 0),
    (TokenPositionEncoding, dict(token_channels=8), 'pos_channels', 0),
    (TokenPositionEncoding, dict(token_channels=8), 'grid_size', 0),
    (TokenPositionEncoding, dict(token_channels=8), 'fuse_groups', 0),
    (TokenTransformer, dict(token_channels=8), 'token_channels', 0),
    (TokenTransformer, dict(token_channels=8), 'num_heads', 0),
    (TokenTransformer, dict(token_channels=8), 'qk_channels', 0),
    (TokenTransformer, dict(token_channels=8), 'qkv_groups', 0),
    (TokenTransformer, dict(token_channels=8), 'ffn_groups', 0),
    (TokenTransformer, dict(token_channels=8), 'ffn_channels', -1),
    (TokenProjector, dict(in_channels=8, token_channels=8), 'in_channels', 0),
    (TokenProjector, dict(in_channels=8, token_channels=8), 'token_channels', 0),
    (TokenProjector, dict(in_channels=8, token_channels=8), 'num_heads', 0),
    (TokenProjector, dict(in_channels=8, token_channels=8), 'qk_channels', 0),
    (TokenProjector, dict(in_channels=8, token_channels=8), 'query_groups', 0),
    (TokenProjector, dict(in_channels=8, token_channels=8), 'key_groups', 0),
    (TokenProjector, dict(in_channels=8, token_channels=8), 'value_groups', 0),
    (VTModule, dict(in_channels=8, token_channels=8, num_tokens=4), 'in_channels', 0),
    (VTModule, dict(in_channels=8, token_channels=8, num_tokens=4), 'token_channels', 0),
    (VTModule, dict(in_channels=8, token_channels=8, num_tokens=4), 'num_tokens', 0),
]


@pytest.mark.parametrize('cls,kwargs,name,bad', ARGUMENTS,
                         ids=[f'{a[0].__name__}-{a[2]}' for a in ARGUMENTS])
def test_every_argument_error_names_the_layer_and_the_argument(cls, kwargs, name, bad):
    minimum = 0 if name == 'ffn_channels' else 1
    with pytest.raises(ValueError) as info:
        cls(**dict(kwargs, **{name: bad}))
    assert str(info.value).startswith(
        f'{cls.__name__}: {name} must be an integer >= {minimum}'), str(info.value)


DIVISIBILITY = [
    (FilterTokenizer, dict(in_channels=6, token_channels=8, num_tokens=4, value_groups=4),
     'in_channels=6 must be divisible by 4'),
    (FilterTokenizer, dict(in_channels=8, token_channels=6, num_tokens=4, value_groups=4),
     'token_channels=6 must be divisible by 4'),
    (RecurrentTokenizer, dict(in_channels=6, token_channels=8, num_heads=4),
     'in_channels=6 must be divisible by 4'),
    (RecurrentTokenizer, dict(in_channels=8, token_channels=6, value_groups=4),
     'token_channels=6 must be divisible by 4'),
    (RecurrentTokenizer, dict(in_channels=6, token_channels=8, value_groups=4),
     'in_channels=6 must be divisible by 4'),
    (RecurrentTokenizer, dict(in_channels=6, token_channels=8, weight_groups=4),
     'in_channels=6 must be divisible by 4'),
    (RecurrentTokenizer, dict(in_channels=8, token_channels=6, weight_groups=4),
     'token_channels=6 must be divisible by 4'),
    (TokenPositionEncoding, dict(token_channels=8, pos_channels=6, fuse_groups=4),
     'token_channels + pos_channels=14 must be divisible by 4'),
    (TokenPositionEncoding, dict(token_channels=6, pos_channels=10, fuse_groups=4),
     'token_channels=6 must be divisible by 4'),
    (TokenTransformer, dict(token_channels=8, qk_channels=6, num_heads=4),
     'qk_channels=6 must be divisible by 4'),
    (TokenTransformer, dict(token_channels=6, qk_channels=8, num_heads=4),
     'token_channels=6 must be divisible by 4'),
    (TokenProjector, dict(in_channels=8, token_channels=8, qk_channels=6, num_heads=4),
     'qk_channels=6 must be divisible by 4'),
    (TokenProjector, dict(in_channels=6, token_channels=8, qk_channels=8, num_heads=4),
     'in_channels=6 must be divisible by 4'),
    (TokenProjector, dict(in_channels=6, token_channels=8, qk_channels=8, query_groups=4),
     'in_channels=6 must be divisible by 4'),
    (TokenProjector, dict(in_channels=8, token_channels=8, qk_channels=6, query_groups=4),
     'qk_channels=6 must be divisible by 4'),
    (TokenProjector, dict(in_channels=8, token_channels=6, key_groups=4),
     'token_channels=6 must be divisible by 4'),
    (TokenProjector, dict(in_channels=8, token_channels=8, qk_channels=6, key_groups=4),
     'qk_channels=6 must be divisible by 4'),
    (TokenProjector, dict(in_channels=8, token_channels=6, value_groups=4),
     'token_channels=6 must be divisible by 4'),
    (TokenProjector, dict(in_channels=6, token_channels=8, qk_channels=8, value_groups=4),
     'in_channels=6 must be divisible by 4'),
]


@pytest.mark.parametrize('cls,kwargs,message', DIVISIBILITY)
def test_divisibility_errors_name_the_argument(cls, kwargs, message):
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    assert str(info.value) == message


def test_divisor_must_be_a_positive_integer():
    for bad in (0, -2, 2.0):
        with pytest.raises(ValueError) as info:
            vt._check_divisible(8, bad, 'in_channels')
        assert str(info.value) == ('the divisor of in_channels=8 must be an integer >= 1, got '
                                   f'{bad!r}')
    vt._check_divisible(8, 1, 'in_channels')  # 1 divides everything


@pytest.mark.parametrize('layer,call', [
    (FilterTokenizer(8, 8, 4), lambda m, x: m(x)),
    (RecurrentTokenizer(8, 8), lambda m, x: m(x, torch.randn(1, 8, 4))),
    (TokenProjector(8, 8), lambda m, x: m(x, torch.randn(1, 8, 4))),
])
def test_feature_map_errors_name_the_layer_and_the_fix(layer, call):
    name = type(layer).__name__
    with pytest.raises(ValueError) as info:
        call(layer, torch.randn(1, 6, 5, 5))
    assert str(info.value) == (
        f'{name} was built for 8 input channels but got a feature map with 6 channels (shape '
        '(1, 6, 5, 5)); set in_channels to 6 or fix the preceding layer')
    with pytest.raises(ValueError) as info:
        call(layer, torch.randn(6, 5, 5))
    assert str(info.value) == f'{name} expects a feature map (N, C, H, W), got shape (6, 5, 5)'


def test_recurrent_tokenizer_token_errors():
    r = RecurrentTokenizer(8, 8)
    x = torch.randn(1, 8, 5, 5)
    with pytest.raises(ValueError) as info:
        r(x)
    assert str(info.value) == ("RecurrentTokenizer needs the previous module's tokens; use "
                               'FilterTokenizer for the first VT module')
    for bad in (torch.randn(1, 6, 4), torch.randn(8, 4)):
        with pytest.raises(ValueError) as info:
            r(x, bad)
        assert str(info.value) == (f'RecurrentTokenizer expects tokens (N, 8, L), got '
                                   f'{tuple(bad.shape)}')
    with pytest.raises(ValueError, match="refresh must be 'all' or 'half', got 'some'"):
        RecurrentTokenizer(8, 8, refresh='some')


@pytest.mark.parametrize('hw', [(7, 7), (13, 9), (5, 11), (1, 3), (20, 29), (6, 8)])
def test_traced_adaptive_pool_matches_torch(hw, monkeypatch):
    """The averaging-matrix form used while tracing equals F.adaptive_avg_pool2d's bins at
    sizes that are and are not multiples of 7, including smaller than 7, in float64."""
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    expected = F.adaptive_avg_pool2d(x, 7)
    monkeypatch.setattr(vt, 'tracing', lambda: True)
    got = vt.adaptive_avg_pool2d(x, 7)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize('traced', [False, True])
@pytest.mark.parametrize('groups,bias', [(1, True), (2, True), (4, False), (1, False)])
def test_pointwise_equals_the_convolution(groups, bias, traced, monkeypatch):
    """pointwise() on tokens (N, C, L) and maps (N, C, H, W), eager and traced (the product
    without einsum that ncnn takes), equals the layer with non-zero biases."""
    monkeypatch.setattr(vt, 'tracing', lambda: traced)
    torch.manual_seed(0)
    conv1 = torch.nn.Conv1d(8, 12, 1, groups=groups, bias=bias)
    conv2 = torch.nn.Conv2d(8, 12, 1, groups=groups, bias=bias)
    if bias:
        torch.nn.init.uniform_(conv1.bias, 1, 2)
        torch.nn.init.uniform_(conv2.bias, 1, 2)
    tokens, maps = torch.randn(3, 8, 5), torch.randn(3, 8, 4, 6)
    torch.testing.assert_close(vt.pointwise(conv1, tokens), conv1(tokens))
    torch.testing.assert_close(vt.pointwise(conv2, maps), conv2(maps))


@pytest.mark.parametrize('build', [
    lambda cfg: FilterTokenizer(8, 8, 4, init_cfg=cfg),
    lambda cfg: RecurrentTokenizer(8, 8, init_cfg=cfg),
    lambda cfg: TokenPositionEncoding(8, init_cfg=cfg),
    lambda cfg: TokenTransformer(8, init_cfg=cfg),
    lambda cfg: TokenProjector(8, 8, init_cfg=cfg),
    lambda cfg: VTModule(8, 8, 4, init_cfg=cfg),
])
def test_init_cfg_is_applied(build):
    """Each layer hands init_cfg to BaseModule: init_weights() applies it."""
    layer = build(dict(type='Constant', val=0.25, layer=['Conv1d', 'Conv2d', 'Linear']))
    layer.init_weights()
    weights = [m.weight for m in layer.modules()
               if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))]
    assert weights and all(bool((w == 0.25).all()) for w in weights)


def test_transformer_ffn_and_its_errors():
    """The FFN (1x1 conv, ReLU, 1x1 conv) exists for any ffn_channels >= 1 and computes
    W2 relu(W1 x + b1) + b2; wrong token shapes are refused by name."""
    assert TokenTransformer(8, ffn_channels=1).ffn is not None
    t = TokenTransformer(8, ffn_channels=6).eval()
    c1, c2 = [m for m in t.ffn.modules() if isinstance(m, torch.nn.Conv1d)]
    x = torch.randn(2, 8, 5)
    with torch.no_grad():
        torch.testing.assert_close(t.ffn(x), c2(torch.relu(c1(x))))
    with pytest.raises(ValueError) as info:
        t(torch.randn(2, 6, 5))
    assert str(info.value) == 'TokenTransformer expects tokens (N, 8, L), got (2, 6, 5)'
    with pytest.raises(ValueError) as info:
        t(torch.randn(8, 5))
    assert str(info.value) == 'TokenTransformer expects tokens (N, 8, L), got (8, 5)'
