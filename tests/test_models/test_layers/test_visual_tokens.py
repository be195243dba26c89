"""The visual-token layers (vt_mm/models/layers/visual_tokens.py): the paper's equations, shapes,
gradients, every configuration and argument check."""
import inspect
import math
import re

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

torch.manual_seed(0)


def _grads_reach_all(module, loss):
    module.zero_grad()
    loss.backward()
    missing = [n for n, p in module.named_parameters()
               if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f'no gradient reaches {missing}'


@pytest.mark.parametrize('hw', [(14, 14), (7, 11), (1, 1)])
def test_filter_tokenizer_shapes_and_softmax_over_pixels(hw):
    tok = FilterTokenizer(in_channels=32, token_channels=48, num_tokens=6)
    x = torch.randn(2, 32, *hw)
    tokens, attn = tok(x)
    assert tokens.shape == (2, 48, 6)
    assert attn.shape == (2, 6, *hw)
    # each token's attention is a distribution over the H*W pixels
    torch.testing.assert_close(attn.flatten(2).sum(-1), torch.ones(2, 6))


@pytest.mark.parametrize('scale_logits', [True, False])
def test_filter_tokenizer_matches_paper_equation(scale_logits):
    """T = softmax_HW(X W_A)^T (X W_V): pooling before the value projection is exact; the
    logits are divided by sqrt(C) (pseudo-code) or not (main-text equation)."""
    tok = FilterTokenizer(16, 24, 4, scale_logits=scale_logits).eval()
    x = torch.randn(3, 16, 5, 6)
    tokens, _ = tok(x)
    xf = x.flatten(2).transpose(1, 2)  # N, HW, C
    w_a = tok.token_coef.weight.view(4, 16)
    logits = (xf @ w_a.T + tok.token_coef.bias) / (math.sqrt(16) if scale_logits else 1.0)
    a = logits.softmax(dim=1)  # over HW
    xv = xf @ tok.value.weight.view(24, 16).T + tok.value.bias  # X W_V
    expected = (a.transpose(1, 2) @ xv).transpose(1, 2)  # N, C_T, L
    torch.testing.assert_close(tokens, expected, rtol=1e-4, atol=1e-5)


def test_recurrent_tokenizer_uses_previous_tokens():
    tok = RecurrentTokenizer(in_channels=32, token_channels=40)
    x = torch.randn(2, 32, 9, 7)
    t_in = torch.randn(2, 40, 5)
    tokens, attn = tok(x, t_in)
    assert tokens.shape == (2, 40, 5) and attn.shape == (2, 5, 9, 7)
    torch.testing.assert_close(attn.flatten(2).sum(-1), torch.ones(2, 5))
    # different input tokens select different pixels
    tokens2, attn2 = tok(x, torch.randn(2, 40, 5))
    assert not torch.allclose(attn, attn2)
    # equation: W_R = T_in W_{T->R}; A = softmax_HW(X W_R); T = A^T X W_V
    w_r = tok.token_to_weight(t_in)  # N, C, L
    a = (torch.einsum('nch,ncl->nhl', x.flatten(2), w_r) / math.sqrt(32)).softmax(dim=1)
    pooled = torch.einsum('nch,nhl->ncl', x.flatten(2), a)
    torch.testing.assert_close(tokens, tok.value(pooled), rtol=1e-4, atol=1e-5)


def test_recurrent_tokenizer_half_refresh_keeps_second_half():
    tok = RecurrentTokenizer(16, 24, refresh='half')
    t_in = torch.randn(1, 24, 8)
    tokens, attn = tok(torch.randn(1, 16, 6, 6), t_in)
    assert tokens.shape == (1, 24, 8) and attn.shape == (1, 4, 6, 6)
    torch.testing.assert_close(tokens[:, :, 4:], t_in[:, :, 4:])


def test_recurrent_tokenizer_multi_head():
    tok = RecurrentTokenizer(32, 32, num_heads=4)
    tokens, attn = tok(torch.randn(2, 32, 5, 5), torch.randn(2, 32, 6))
    assert tokens.shape == (2, 32, 6)
    torch.testing.assert_close(attn.flatten(2).sum(-1), torch.ones(2, 6))


def test_recurrent_tokenizer_needs_tokens():
    with pytest.raises(ValueError, match='FilterTokenizer'):
        RecurrentTokenizer(8, 8)(torch.randn(1, 8, 4, 4))


@pytest.mark.parametrize('hw', [(14, 14), (3, 5), (60, 61)])
def test_position_encoding_any_size(hw):
    pe = TokenPositionEncoding(token_channels=20, pos_channels=8, grid_size=7)
    tokens = torch.randn(2, 20, 4)
    attn = torch.rand(2, 4, *hw)
    out = pe(tokens, attn)
    assert out.shape == tokens.shape
    # the encoding depends on where a token looks
    out2 = pe(tokens, attn.flip(-1))
    assert not torch.allclose(out, out2)


@pytest.mark.parametrize('heads', [1, 4])
def test_transformer_softmax_over_tokens_and_equation(heads):
    tr = TokenTransformer(token_channels=32, num_heads=heads)
    t = torch.randn(2, 32, 7)
    attn = tr.attention(t)
    assert attn.shape == (2, heads, 7, 7)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, heads, 7))
    out = tr(t)
    assert out.shape == t.shape
    if heads == 1:  # T' = T + softmax_L((T K)(T Q)^T) T ; T_out = T' + ReLU(T' F1) F2
        tt = t.transpose(1, 2)  # N, L, C
        k = tt @ tr.key.weight.view(32, 32).T
        q = tt @ tr.query.weight.view(32, 32).T
        a = (k @ q.transpose(1, 2) / math.sqrt(32)).softmax(dim=-1)
        t1 = tt + a @ tt
        f1, f2 = tr.ffn[0], tr.ffn[2]
        hidden = torch.relu(t1 @ f1.weight.view(32, 32).T + f1.bias)
        expected = t1 + hidden @ f2.weight.view(32, 32).T + f2.bias
        torch.testing.assert_close(out, expected.transpose(1, 2), rtol=1e-4, atol=1e-5)


def test_transformer_is_token_permutation_equivariant():
    tr = TokenTransformer(16, num_heads=2, with_value=True)
    t = torch.randn(1, 16, 6)
    perm = torch.randperm(6)
    torch.testing.assert_close(tr(t)[:, :, perm], tr(t[:, :, perm]), rtol=1e-5, atol=1e-5)


def test_the_query_fold_is_taken_exactly_where_it_saves_multiply_adds():
    """X (W_Q K^T) against (X W_Q) K^T, by hand. With 4 heads in 4 groups and C = qk = 16:
    direct HW * 16 * (4 + L), folded 64 L + 16 L HW: folding pays off iff L < HW. One head,
    one group, C = 16, qk = 8: direct HW * 8 * (16 + L), folded 128 L + 16 L HW: iff
    L < 16 HW / (16 + HW), so at 16 pixels iff L < 8."""
    blocked = TokenProjector(16, 8, num_heads=4, qk_channels=16, query_groups=4, key_groups=4)
    assert [blocked._fold_is_cheaper(5, n) for n in (4, 5, 6)] == [True, False, False]
    assert [blocked._fold_is_cheaper(p, 10) for p in (9, 10, 11)] == [False, False, True]
    narrow = TokenProjector(16, 8, qk_channels=8)
    assert [narrow._fold_is_cheaper(16, n) for n in (7, 8)] == [True, False]
    assert not TokenProjector(12, 8, num_heads=2, qk_channels=12,  # heads 2, groups 3: no fold
                              query_groups=3)._fold_is_cheaper(1000, 1)


@pytest.mark.parametrize('heads,qk,groups', [(1, None, 1), (2, 16, 1), (4, 8, 1), (1, 16, 4),
                                             (2, 16, 4), (4, 16, 4), (4, 16, 2), (16, 16, 16)])
def test_projector_softmax_over_tokens_and_reassociation_exact(heads, qk, groups):
    proj = TokenProjector(in_channels=16, token_channels=24, num_heads=heads, qk_channels=qk,
                          query_groups=groups, key_groups=groups // 2 or 1)
    x = torch.randn(2, 16, 5, 7)
    t = torch.randn(2, 24, 3)
    # one block per head (one head, or heads == groups): folding is cheaper here and is taken
    if heads == 1 or heads == groups:
        assert proj._fold_is_cheaper(35, 3)
    attn = proj.attention(x, t)
    assert attn.shape == (2, heads, 35, 3)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, heads, 35))
    out_fast = proj(x, t)
    proj.fast_paths = False
    torch.testing.assert_close(proj.attention(x, t), attn, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(proj(x, t), out_fast, rtol=1e-5, atol=1e-5)
    assert out_fast.shape == x.shape


@pytest.mark.parametrize('heads,groups', [(16, 16), (4, 2), (2, 4), (3, 2)])
def test_projector_equation_multi_head_grouped(heads, groups):
    """Per head: X + softmax_L((X W_Q)_h (T W_K)_h^T / sqrt(d)) (T W_V)_h, with grouped W_Q.

    The pseudo-code's setting (16 heads, 16 groups) and the other nestings fold; (3, 2) cannot.
    """
    c, qk = 48, 48
    proj = TokenProjector(c, 32, num_heads=heads, qk_channels=qk, query_groups=groups)
    assert bool(proj._fold_blocks()) == (heads % groups == 0 or groups % heads == 0)
    x, t = torch.randn(2, c, 6, 7), torch.randn(2, 32, 5)
    d = qk // heads
    q = torch.nn.functional.conv2d(x, proj.query.weight, groups=groups).flatten(2)  # N, qk, HW
    k, v = proj.key(t), proj.value(t)  # the Conv1d layers themselves
    q, k = q.view(2, heads, d, -1), k.view(2, heads, d, -1)
    a = (q.transpose(2, 3) @ k / math.sqrt(d)).softmax(dim=-1)  # N, h, HW, L
    expected = x + (v.view(2, heads, c // heads, -1) @ a.transpose(2, 3)).reshape(x.shape)
    for fast in (True, False):  # folded (where it nests) and the reference
        proj.fast_paths = fast
        torch.testing.assert_close(proj(x, t), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(proj.attention(x, t), a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('groups', [1, 4])
def test_pointwise_matches_conv1d(groups):
    from vt_mm.models.layers.visual_tokens import pointwise
    conv = torch.nn.Conv1d(32, 24, 1, groups=groups)
    t = torch.randn(3, 32, 9)
    torch.testing.assert_close(pointwise(conv, t), conv(t), rtol=1e-5, atol=1e-6)


def test_projector_equation_single_head():
    proj = TokenProjector(8, 12)
    x = torch.randn(1, 8, 3, 4)
    t = torch.randn(1, 12, 5)
    xf = x.flatten(2).transpose(1, 2)  # N, HW, C
    tt = t.transpose(1, 2)  # N, L, C_T
    q = xf @ proj.query.weight.view(8, 8).T
    k = tt @ proj.key.weight.view(8, 12).T
    v = tt @ proj.value.weight.view(8, 12).T + proj.value.bias
    a = (q @ k.transpose(1, 2) / math.sqrt(8)).softmax(dim=-1)  # over the L tokens
    expected = (xf + a @ v).transpose(1, 2).reshape(1, 8, 3, 4)
    torch.testing.assert_close(proj(x, t), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('tokenizer', ['filter', 'recurrent'])
def test_vt_module_gradients_reach_every_parameter(tokenizer):
    mod = VTModule(in_channels=16, token_channels=32, num_tokens=4, tokenizer=tokenizer,
                   transformer_cfg=dict(num_heads=2, with_value=True))
    x = torch.randn(2, 16, 9, 11, requires_grad=True)
    prev = torch.randn(2, 32, 4) if tokenizer == 'recurrent' else None
    out, tokens = mod(x, prev)
    assert out.shape == x.shape and tokens.shape == (2, 32, 4)
    _grads_reach_all(mod, (out**2).mean() + (tokens**2).mean())
    assert x.grad is not None


def test_wrong_channels_error_names_both():
    tok = FilterTokenizer(32, 64, 8)
    with pytest.raises(ValueError, match=r'32 input channels.*16 channels'):
        tok(torch.randn(1, 16, 4, 4))
    with pytest.raises(ValueError, match='tokenizer must be'):
        VTModule(8, 8, 2, tokenizer='dynamic')


def test_projector_inplace_residual_is_never_taken_under_autograd():
    """Guards against the in-place residual (``baddbmm_`` on X) being taken while autograd
    records: X is needed for the backward pass. Outputs *and gradients* of ``inplace=True``
    must equal the copied residual's, and X must be left untouched."""
    torch.manual_seed(0)
    proj = TokenProjector(16, 24, num_heads=2)
    for p in proj.parameters():
        p.data.uniform_(-0.5, 0.5)  # non-zero biases too
    base = torch.randn(2, 16, 5, 7)
    t = torch.randn(2, 24, 3, requires_grad=True)
    grads = []
    for inplace in (False, True):
        x = (base * 1.0).requires_grad_()
        h = x * 2  # a non-leaf map, as the laterals are in VT-FPN
        before = h.detach().clone()
        out = proj(h, t, inplace=inplace)
        assert torch.equal(h.detach(), before), 'X was overwritten while autograd recorded'
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([x.grad.clone(), t.grad.clone()] +
                     [p.grad.clone() for p in proj.parameters()])
        t.grad = None
        proj.zero_grad()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # without autograd the in-place path is taken and gives the same map
        x = base.clone()
        expected = proj(x, t)
        assert torch.equal(x, base)
        got = proj(x, t, inplace=True)
        assert got.data_ptr() == x.data_ptr()
        torch.testing.assert_close(got, expected)


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
    assert j.fast_paths is True and TokenProjector(16, 8).qk_channels == 16


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


def test_traced_adaptive_pool_writes_no_adaptive_pooling_and_keeps_the_device(monkeypatch):
    """A traced graph holds the averaging matrices, not adaptive pooling (which ONNX lacks for
    these sizes), built on the input's device (the meta device stands in for a GPU: a matrix
    made on the CPU cannot meet it); eager runs use F.adaptive_avg_pool2d itself."""

    class Pool(torch.nn.Module):

        def forward(self, x):
            return vt.adaptive_avg_pool2d(x, 7)

    with pytest.warns(FutureWarning):  # torch.jit.trace is deprecated
        graph = torch.jit.trace(Pool(), (torch.randn(1, 2, 9, 11), )).inlined_graph
    kinds = {n.kind() for n in graph.nodes()}
    assert 'aten::adaptive_avg_pool2d' not in kinds and 'aten::matmul' in kinds
    calls = []
    monkeypatch.setattr(vt.F, 'adaptive_avg_pool2d', lambda x, s: calls.append(s) or x)
    vt.adaptive_avg_pool2d(torch.randn(1, 2, 9, 11), 7)
    assert calls == [7]
    monkeypatch.setattr(vt, 'tracing', lambda: True)
    out = vt.adaptive_avg_pool2d(torch.empty(1, 2, 9, 11, device='meta'), 7)
    assert out.device.type == 'meta' and out.shape == (1, 2, 7, 7) and calls == [7]


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
    einsums = []
    einsum = torch.einsum
    monkeypatch.setattr(torch, 'einsum', lambda *a: einsums.append(a[0]) or einsum(*a))
    torch.testing.assert_close(vt.pointwise(conv1, tokens), conv1(tokens))
    # eager tokens: one einsum over all N*L tokens (its weight gradient is one product)
    assert einsums == ([] if traced else ['goc,ngcl->ngol'])
    torch.testing.assert_close(vt.pointwise(conv2, maps), conv2(maps))
    assert len(einsums) == (0 if traced else 1)  # maps: W X per sample


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


@pytest.mark.parametrize('groups,bias', [(1, True), (4, False)])
def test_pointwise_convs_are_the_torch_convs(groups, bias, monkeypatch):
    """PointwiseConv1d / PointwiseConv2d: nn.Conv1d / nn.Conv2d with the same arguments,
    initialisation, state_dict and result, fast (a product) and reference (the conv)."""
    from vt_mm.models.layers import PointwiseConv1d, PointwiseConv2d
    for ours, theirs, x in ((PointwiseConv1d, torch.nn.Conv1d, torch.randn(3, 32, 9)),
                            (PointwiseConv2d, torch.nn.Conv2d, torch.randn(2, 32, 5, 7))):
        torch.manual_seed(0)
        layer = ours(32, 24, groups=groups, bias=bias)
        torch.manual_seed(0)
        plain = theirs(32, 24, 1, groups=groups, bias=bias)
        assert isinstance(layer, theirs) and layer.fast_paths is True
        assert all(torch.equal(a, b) for a, b in zip(layer.state_dict().values(),
                                                      plain.state_dict().values()))
        assert list(layer.state_dict()) == list(plain.state_dict())
        expected = plain(x)
        conv = getattr(F, f'conv{x.dim() - 2}d')
        calls = []
        monkeypatch.setattr(F, conv.__name__, lambda *a, **k: calls.append(1) or conv(*a, **k))
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
        assert calls == []  # the fast path is a product, not the convolution
        layer.fast_paths = False
        assert torch.equal(layer(x), expected) and calls == [1]  # the torch layer's own forward
        monkeypatch.undo()
        dims = x.dim() - 2
        for size in (1, (1, ) * dims):
            assert ours(4, 4, size).kernel_size == (1, ) * dims
        for size in (3, 2, (2, ) * dims, (1, ) * (dims - 1) + (2, ), (2, ) + (1, ) * (dims - 1)):
            with pytest.raises(ValueError, match=rf'^{ours.__name__} is 1x1, got kernel_size='
                               rf'{re.escape(repr(size))}$'):
                ours(4, 4, size)
        for option in (dict(stride=2), dict(padding=1), dict(dilation=2)):
            with pytest.raises(ValueError, match=rf'^{ours.__name__} takes no stride, padding or '
                               'dilation$'):
                ours(4, 4, 1, **option)
        assert ours(4, 4, kernel_size=1).kernel_size in ((1, ), (1, 1))


def test_set_fast_paths_reaches_every_module_and_only_those():
    from vt_mm.models.layers import set_fast_paths
    module = VTModule(16, 8, 4)
    switched = [m for m in module.modules() if hasattr(type(m), 'fast_paths')]
    assert {type(m).__name__ for m in switched} == {'PointwiseConv1d', 'PointwiseConv2d',
                                                     'TokenProjector'}
    assert set_fast_paths(module, False) is module
    assert not any(m.fast_paths for m in switched)
    assert not any('fast_paths' in vars(m) for m in module.modules() if m not in switched)
    set_fast_paths(module, 1)
    assert all(m.fast_paths is True for m in switched)
    x = torch.randn(2, 16, 6, 5)
    with torch.no_grad():
        fast = module(x)[0]
        set_fast_paths(module, False)
        torch.testing.assert_close(module(x)[0], fast, rtol=1e-5, atol=1e-5)


def _structure(module):
    """Every submodule's name, plain settings (groups, heads, flags) and parameter shapes."""
    plain = (bool, int, float, str, tuple, type(None))
    return [(name, type(m).__name__,
             {k: v for k, v in vars(m).items() if not k.startswith('_') and isinstance(v, plain)},
             {k: tuple(p.shape) for k, p in m.named_parameters(recurse=False)})
            for name, m in module.named_modules()]


@pytest.mark.parametrize('build_default,build_paper', [
    (lambda: FilterTokenizer(16, 8, 4),
     lambda: FilterTokenizer(16, 8, 4, value_groups=1, scale_logits=True)),
    (lambda: RecurrentTokenizer(16, 8),
     lambda: RecurrentTokenizer(16, 8, num_heads=1, value_groups=1, weight_groups=1,
                                refresh='all')),
    (lambda: TokenPositionEncoding(8),
     lambda: TokenPositionEncoding(8, pos_channels=32, grid_size=7, fuse_groups=1)),
    (lambda: TokenTransformer(8),
     lambda: TokenTransformer(8, num_heads=1, qk_channels=8, qkv_groups=1, with_value=False,
                              ffn_channels=8, ffn_groups=1)),
    (lambda: TokenProjector(16, 8),
     lambda: TokenProjector(16, 8, num_heads=1, qk_channels=16, query_groups=1, key_groups=1,
                            value_groups=1)),
    (lambda: VTModule(16, 8, 4),
     lambda: VTModule(16, 8, 4, tokenizer='filter', with_pos_encoding=True, with_projector=True)),
])
def test_layers_built_at_their_defaults_are_the_papers(build_default, build_paper):
    """What a call that leaves the settings out builds (not what the signature says): the
    paper's layer, setting for setting and weight for weight."""
    assert _structure(build_default()) == _structure(build_paper())
