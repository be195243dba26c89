"""Visual-token layers: shapes, the paper's softmax axes, equivalences we rely on, gradients."""
import math

import pytest
import torch

from vt_mm.models.layers import (
    FilterTokenizer,
    RecurrentTokenizer,
    TokenPositionEncoding,
    TokenProjector,
    TokenTransformer,
    VTModule,
)

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
    proj.reassociate = False
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
    for fold in (True, False):
        proj.reassociate = fold
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
