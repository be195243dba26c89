"""Visual-token layers of Visual Transformers (VT).

Wu et al., "Visual Transformers: Token-based Image Representation and Processing for Computer
Vision", https://arxiv.org/abs/2006.03677 (ICCV-21 version: "Where do transformers really belong
in vision models?").

A VT module turns a feature map ``X`` (N, C, H, W) into ``L`` visual tokens ``T`` (N, C_T, L)
with a *tokenizer*, relates the tokens with a *transformer*, and fuses them back into the map
with a *projector*. Tokens are channel-first (N, C_T, L) so that the pointwise ops on tokens are
1x1 ``Conv1d`` layers, which also allows the grouped convolutions of the paper's appendix.

Decisions where the paper versions and its pseudo-code differ (each is tested):

* Tokenizer value projection ``X W_V`` (C -> C_T) is applied *after* spatial pooling:
  ``A^T (X W_V) = (A^T X) W_V`` because both are linear, so the result is identical while the
  cost drops from HW*C*C_T to L*C*C_T multiply-adds.
* Attention logits are scaled by 1/sqrt(d) (d = key/query width) as in the appendix pseudo-code;
  the equations in the main text omit it. It changes no parameter count.
* Softmax axes follow the paper: the tokenizer normalises over the HW pixels (each token is a
  convex combination of pixels), the transformer and the projector over the L tokens.
* The projector computes ``(X W_Q)(T W_K)^T`` as ``X (W_Q (T W_K)^T)`` whenever that takes fewer
  multiply-adds for the input at hand (few tokens, wide queries), which is exact because ``W_Q``
  has no bias; a grouped ``W_Q`` is folded group by group, also with several heads when the
  groups and the heads nest (one divides the other, e.g. the pseudo-code's 16 and 16).

Fast paths (same parameters and outputs; ``fast_paths=False`` on a module, or
:func:`set_fast_paths` on a model, runs the reference forward instead, the spec they are tested
against): the 1x1 projections are :class:`PointwiseConv1d` / :class:`PointwiseConv2d` layers,
``nn.Conv1d`` / ``nn.Conv2d`` whose forward is a (grouped) matrix product (conv1d's CPU path is
~10x slower at token sizes); the projector reassociates its product (above), lays its attention
out (N, heads, L, HW) so that nothing large is transposed, fuses the residual ``X + ...`` into
the last product (``baddbmm``) and, without autograd, may add in place. Every declared layer is
called as a module (the projector's ``W_Q`` only where it is not folded), so forward hooks and
FLOP counters see each one.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from ..arg_checks import check_int
from .tracing import tracing

__all__ = [
    'FilterTokenizer', 'RecurrentTokenizer', 'TokenPositionEncoding', 'TokenTransformer',
    'TokenProjector', 'VTModule', 'adaptive_avg_pool2d', 'PointwiseConv1d', 'PointwiseConv2d',
    'set_fast_paths'
]


def set_fast_paths(module: nn.Module, enabled: bool) -> nn.Module:
    """Switches the exact fast paths of every vt-mm module inside ``module`` (itself included) on
    or off; off, each runs its reference forward. Returns ``module``.

    Example:
        >>> import copy
        >>> from vt_mm.models.necks import VTFPN
        >>> neck = VTFPN(in_channels=[8, 16], out_channels=16, num_outs=2)
        >>> reference = set_fast_paths(copy.deepcopy(neck), False)  # every layer called
        >>> reference.fast_paths, reference.projectors[0].fast_paths, neck.fast_paths
        (False, False, True)
    """
    for m in module.modules():
        if hasattr(type(m), 'fast_paths'):
            m.fast_paths = bool(enabled)
    return module


def _check_divisible(value: int, divisor: int, what: str) -> None:
    if not isinstance(divisor, int) or divisor <= 0:
        raise ValueError(f'the divisor of {what}={value} must be an integer >= 1, got {divisor!r}')
    if value % divisor != 0:
        raise ValueError(f'{what}={value} must be divisible by {divisor}')


def _check_feature(x: Tensor, channels: int, who: str) -> None:
    if x.dim() != 4:
        raise ValueError(f'{who} expects a feature map (N, C, H, W), got shape {tuple(x.shape)}')
    if x.shape[1] != channels:
        raise ValueError(f'{who} was built for {channels} input channels but got a feature map '
                         'with '
                         f'{x.shape[1]} channels (shape {tuple(x.shape)}); set in_channels to '
                         f'{x.shape[1]} or fix the preceding layer')


def adaptive_avg_pool2d(x: Tensor, size: int) -> Tensor:
    """``F.adaptive_avg_pool2d(x, size)``, also for traced graphs of any input size.

    ONNX has no adaptive pooling for sizes that are not multiples of the output, so while tracing
    the pooling is written as ``P_H X P_W^T`` with the averaging matrices built from the input's
    (dynamic) size: output cell ``i`` averages input rows ``[floor(i H / s), ceil((i + 1) H / s))``,
    PyTorch's bins. Same result up to float rounding.
    """
    if not tracing():
        return F.adaptive_avg_pool2d(x, size)

    def bins(length):
        idx = torch.arange(length, device=x.device)
        cell = torch.arange(size, device=x.device)
        start = torch.div(cell * length, size, rounding_mode='floor')
        end = torch.div((cell + 1) * length + size - 1, size, rounding_mode='floor')
        inside = (idx[None] >= start[:, None]) & (idx[None] < end[:, None])
        weights = inside.to(x.dtype)
        return weights / weights.sum(dim=1, keepdim=True)  # (size, length)

    return bins(x.shape[-2]) @ x @ bins(x.shape[-1]).transpose(0, 1)


def _pool_tokens(x: Tensor, attn: Tensor) -> Tensor:
    """Weighted spatial pooling: (N, C, HW) x (N, L, HW) -> (N, C, L)."""
    return torch.bmm(x, attn.transpose(1, 2))


def pointwise(conv: nn.Module, x: Tensor) -> Tensor:
    """``conv(x)`` for a 1x1 (grouped) ``Conv1d`` or ``Conv2d`` as a matrix product.

    ``x`` is (N, C_in, L) tokens or an (N, C_in, H, W) map; same parameters and result as
    calling the layer, but faster on the CPU (``conv1d`` at token sizes is several times slower,
    a 1x1 ``conv2d`` on an NCHW map ~1.5-2x):

    * tokens: one product over all N*L tokens (``einsum``), so the weight gradient is one
      matrix product too (a per-sample batched product would write N weight-sized gradients
      and sum them: 30x slower for the 1024x1056 weights of VT-FPN);
    * maps: ``W X`` per sample over the flattened pixels, which keeps the NCHW layout.
    """
    n, c = x.shape[:2]
    g = conv.groups
    weight = conv.weight.reshape(g, conv.out_channels // g, c // g)
    bias = conv.bias
    if x.dim() == 3 and not tracing():  # traced: the product below (4-D at most, for ncnn)
        out = torch.einsum('goc,ngcl->ngol', weight, x.reshape(n, g, c // g, -1))
        out = out.reshape(n, conv.out_channels, -1)
        if bias is not None:
            out = out + bias.unsqueeze(-1)
        return out.contiguous()  # einsum may return a permuted layout; tokens are small
    flat = x.reshape(n, c, -1)
    num = flat.shape[2]
    if g == 1 and bias is not None:
        out = torch.baddbmm(bias.view(1, -1, 1).expand(n, -1, num), weight.expand(n, -1, -1),
                            flat)
    else:
        out = torch.matmul(weight, flat.view(n, g, c // g, num)).reshape(n, -1, num)
        if bias is not None:
            out = out + bias.unsqueeze(-1)
    return out.view((n, conv.out_channels) + tuple(x.shape[2:]))


class PointwiseConv1d(nn.Conv1d):
    """A 1x1 (grouped) ``nn.Conv1d`` on tokens (N, C, L), run as a matrix product.

    Same arguments, parameters, state_dict keys, initialisation and result as ``nn.Conv1d``
    (``kernel_size`` must be 1); with ``fast_paths=False`` it is ``nn.Conv1d``'s own forward.
    """
    fast_paths = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size=1, **kwargs):
        if kernel_size not in (1, (1, )):
            raise ValueError(f'{type(self).__name__} is 1x1, got kernel_size={kernel_size!r}')
        super().__init__(in_channels, out_channels, 1, **kwargs)
        if self.stride != (1, ) or self.padding != (0, ) or self.dilation != (1, ):
            raise ValueError(f'{type(self).__name__} takes no stride, padding or dilation')

    def forward(self, x: Tensor) -> Tensor:
        return pointwise(self, x) if self.fast_paths else super().forward(x)


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 (grouped) ``nn.Conv2d`` on maps (N, C, H, W), run as ``W X`` per sample over the
    flattened pixels (keeps NCHW; ~1.5-2x faster than conv2d on the CPU).

    Same arguments, parameters, state_dict keys, initialisation and result as ``nn.Conv2d``
    (``kernel_size`` must be 1); with ``fast_paths=False`` it is ``nn.Conv2d``'s own forward.
    mmcv's ``ConvModule`` builds it from ``conv_cfg=dict(type=PointwiseConv2d)``.
    """
    fast_paths = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size=1, **kwargs):
        if kernel_size not in (1, (1, 1)):
            raise ValueError(f'{type(self).__name__} is 1x1, got kernel_size={kernel_size!r}')
        super().__init__(in_channels, out_channels, 1, **kwargs)
        if self.stride != (1, 1) or self.padding != (0, 0) or self.dilation != (1, 1):
            raise ValueError(f'{type(self).__name__} takes no stride, padding or dilation')

    def forward(self, x: Tensor) -> Tensor:
        return pointwise(self, x) if self.fast_paths else super().forward(x)


class FilterTokenizer(BaseModule):
    """Filter-based (static) tokenizer: ``T = softmax_HW(X W_A)^T X W_V``.

    Each of the ``num_tokens`` learned 1x1 filters ``W_A`` scores every pixel; a softmax over the
    HW pixels turns the scores into a spatial attention map, and each token is the
    attention-weighted average of the (value-projected) pixels.

    Args:
        in_channels (int): Feature map channels C.
        token_channels (int): Token channels C_T.
        num_tokens (int): Number of tokens L.
        value_groups (int): Groups of the value projection (1 = dense, as in the equations).
        scale_logits (bool): Divide the logits by sqrt(C) as the appendix pseudo-code does
            (the main text's ``softmax(X W_A)`` has no scale). Default: True.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 token_channels: int,
                 num_tokens: int,
                 value_groups: int = 1,
                 scale_logits: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        for name, value in (('in_channels', in_channels), ('token_channels', token_channels),
                            ('num_tokens', num_tokens), ('value_groups', value_groups)):
            check_int('FilterTokenizer', name, value)
        _check_divisible(in_channels, value_groups, 'in_channels')
        _check_divisible(token_channels, value_groups, 'token_channels')
        self.in_channels = in_channels
        self.token_channels = token_channels
        self.num_tokens = num_tokens
        self.scale_logits = scale_logits
        self.token_coef = PointwiseConv2d(in_channels, num_tokens)  # W_A
        self.value = PointwiseConv1d(in_channels, token_channels, groups=value_groups)  # W_V

    def forward(self, x: Tensor, tokens: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Returns tokens (N, C_T, L) and the spatial attention (N, L, H, W)."""
        _check_feature(x, self.in_channels, type(self).__name__)
        n, c, h, w = x.shape
        logits = self.token_coef(x).flatten(2)  # N, L, HW
        if self.scale_logits:
            logits = logits / math.sqrt(c)
        attn = logits.softmax(dim=-1)  # over the HW pixels
        tokens = self.value(_pool_tokens(x.flatten(2), attn))
        return tokens, attn.view(n, self.num_tokens, h, w)


class RecurrentTokenizer(BaseModule):
    """Recurrent tokenizer: ``W_R = T_in W_{T->R}``, ``T = softmax_HW(X W_R)^T X W_V``.

    The previous module's tokens choose which pixels the new tokens gather, so token extraction
    follows the image content. With ``refresh='half'`` (the paper's first arXiv version) only
    the first half of the input tokens produces new tokens and the second half is carried over
    unchanged; the default ``'all'`` follows the later version's equation.

    Args:
        in_channels (int): Feature map channels C.
        token_channels (int): Token channels C_T (of both the input and the output tokens).
        num_heads (int): Heads of the pixel-token attention (1 in the equations, 16 in the
            appendix pseudo-code).
        value_groups (int): Groups of the value projection.
        weight_groups (int): Groups of ``W_{T->R}``. Default: 1 (dense).
        refresh (str): ``'all'`` or ``'half'``.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 token_channels: int,
                 num_heads: int = 1,
                 value_groups: int = 1,
                 weight_groups: int = 1,
                 refresh: str = 'all',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        if refresh not in ('all', 'half'):
            raise ValueError(f"refresh must be 'all' or 'half', got {refresh!r}")
        for name, value in (('in_channels', in_channels), ('token_channels', token_channels),
                            ('num_heads', num_heads), ('value_groups', value_groups),
                            ('weight_groups', weight_groups)):
            check_int('RecurrentTokenizer', name, value)
        _check_divisible(in_channels, num_heads, 'in_channels')
        _check_divisible(in_channels, value_groups, 'in_channels')
        _check_divisible(token_channels, value_groups, 'token_channels')
        _check_divisible(in_channels, weight_groups, 'in_channels')
        _check_divisible(token_channels, weight_groups, 'token_channels')
        self.in_channels = in_channels
        self.token_channels = token_channels
        self.num_heads = num_heads
        self.refresh = refresh
        self.token_to_weight = PointwiseConv1d(
            token_channels, in_channels, groups=weight_groups)  # W_{T->R}
        self.value = PointwiseConv1d(in_channels, token_channels, groups=value_groups)

    def forward(self, x: Tensor, tokens: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Returns tokens (N, C_T, L) and the spatial attention (N, L, H, W)."""
        name = type(self).__name__
        _check_feature(x, self.in_channels, name)
        if tokens is None:
            raise ValueError(f'{name} needs the previous module\'s tokens; use FilterTokenizer '
                             'for the first VT module')
        if tokens.dim() != 3 or tokens.shape[1] != self.token_channels:
            raise ValueError(f'{name} expects tokens (N, {self.token_channels}, L), '
                             f'got {tuple(tokens.shape)}')
        n, c, h, w = x.shape
        if self.refresh == 'half':
            num_new = tokens.shape[2] // 2
            source, kept = tokens[:, :, :num_new], tokens[:, :, num_new:]
        else:
            source, kept = tokens, None
        num_new = source.shape[2]
        weight = self.token_to_weight(source)  # N, C, L': one pixel filter per token
        d = c // self.num_heads
        # per head: (N*h, L', d) x (N*h, d, HW) -> (N*h, L', HW)
        logits = torch.bmm(
            weight.reshape(n * self.num_heads, d, num_new).transpose(1, 2),
            x.reshape(n * self.num_heads, d, h * w)) / math.sqrt(d)
        attn = logits.softmax(dim=-1)  # over the HW pixels
        # Each head pools its own channel slice of X.
        pooled = torch.bmm(x.reshape(n * self.num_heads, d, h * w), attn.transpose(1, 2))
        pooled = pooled.view(n, c, num_new)
        # The head-averaged map is what position encoding and visualisation use.
        attn = attn.view(n, self.num_heads, num_new, h * w).mean(dim=1)
        new_tokens = self.value(pooled)
        if kept is not None:
            new_tokens = torch.cat([new_tokens, kept], dim=2)
        return new_tokens, attn.view(n, num_new, h, w)


class TokenPositionEncoding(BaseModule):
    """Position encoding from the tokenizer's spatial attention.

    The attention map of each token, A (N, L, H, W), is downsampled to a fixed
    ``grid_size x grid_size`` (adaptive average pooling, so any input size works), flattened and
    multiplied by learned weights ``W_{A->P}`` (grid^2 -> C_P); the encoding is concatenated to the
    tokens and a 1x1 convolution maps C_T + C_P back to C_T.

    Args:
        token_channels (int): Token channels C_T.
        pos_channels (int): Encoding channels C_P. Default: 32.
        grid_size (int): Side of the downsampled attention map. Default: 7.
        fuse_groups (int): Groups of the fusing 1x1 convolution. Default: 1 (dense).
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 token_channels: int,
                 pos_channels: int = 32,
                 grid_size: int = 7,
                 fuse_groups: int = 1,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        for name, value in (('token_channels', token_channels), ('pos_channels', pos_channels),
                            ('grid_size', grid_size), ('fuse_groups', fuse_groups)):
            check_int('TokenPositionEncoding', name, value)
        _check_divisible(token_channels + pos_channels, fuse_groups, 'token_channels + '
                                                                     'pos_channels')
        _check_divisible(token_channels, fuse_groups, 'token_channels')
        self.grid_size = grid_size
        self.attn_to_pos = nn.Linear(grid_size * grid_size, pos_channels, bias=False)  # W_{A->P}
        self.fuse = PointwiseConv1d(token_channels + pos_channels, token_channels,
                                    groups=fuse_groups)

    def forward(self, tokens: Tensor, attn: Tensor) -> Tensor:
        pooled = adaptive_avg_pool2d(attn, self.grid_size).flatten(2)  # N, L, g*g
        pos = self.attn_to_pos(pooled).transpose(1, 2)  # N, C_P, L
        return self.fuse(torch.cat([tokens, pos], dim=1))


class TokenTransformer(BaseModule):
    """Transformer over visual tokens.

    ``T' = T + softmax_L((T K)(T Q)^T) (T V)``, ``T_out = T' + ReLU(T' F1) F2`` where K, Q, V, F1,
    F2 are pointwise (1x1 Conv1d) projections. With ``with_value=False`` V is the identity, exactly
    the equation of the paper's main text; the appendix pseudo-code adds V, 16 heads and grouped
    projections (``qkv_groups``), halves the key/query width and drops the ReLU feed-forward for a
    single projection. Those variants are reachable through the arguments.

    Args:
        token_channels (int): Token channels C_T.
        num_heads (int): Attention heads. Default: 1.
        qk_channels (int, optional): Key/query width. Default: C_T.
        qkv_groups (int): Groups of the K/Q/V projections. Default: 1.
        with_value (bool): Use a value projection V. Default: False.
        ffn_channels (int, optional): Hidden width of F1; 0 disables the feed-forward.
            Default: C_T.
        ffn_groups (int): Groups of F1 and F2. Default: 1.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 token_channels: int,
                 num_heads: int = 1,
                 qk_channels: Optional[int] = None,
                 qkv_groups: int = 1,
                 with_value: bool = False,
                 ffn_channels: Optional[int] = None,
                 ffn_groups: int = 1,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        qk_channels = token_channels if qk_channels is None else qk_channels
        ffn_channels = token_channels if ffn_channels is None else ffn_channels
        for name, value in (('token_channels', token_channels), ('num_heads', num_heads),
                            ('qk_channels', qk_channels), ('qkv_groups', qkv_groups),
                            ('ffn_groups', ffn_groups)):
            check_int('TokenTransformer', name, value)
        check_int('TokenTransformer', 'ffn_channels', ffn_channels, minimum=0)  # 0: no FFN
        _check_divisible(qk_channels, num_heads, 'qk_channels')
        _check_divisible(token_channels, num_heads, 'token_channels')
        self.token_channels = token_channels
        self.num_heads = num_heads
        self.qk_channels = qk_channels
        self.key = PointwiseConv1d(token_channels, qk_channels, groups=qkv_groups, bias=False)
        self.query = PointwiseConv1d(token_channels, qk_channels, groups=qkv_groups, bias=False)
        self.value = PointwiseConv1d(
            token_channels, token_channels, groups=qkv_groups) if with_value else None
        if ffn_channels > 0:
            self.ffn = nn.Sequential(
                PointwiseConv1d(token_channels, ffn_channels, groups=ffn_groups),  # F1
                nn.ReLU(inplace=True),
                PointwiseConv1d(ffn_channels, token_channels, groups=ffn_groups))  # F2
        else:
            self.ffn = None

    def attention(self, tokens: Tensor) -> Tensor:
        """Attention weights (N, heads, L, L); each row sums to 1 over the L tokens."""
        n, _, num = tokens.shape
        h, d = self.num_heads, self.qk_channels // self.num_heads
        k = self.key(tokens).view(n * h, d, num)
        q = self.query(tokens).view(n * h, d, num)
        logits = torch.bmm(k.transpose(1, 2), q) / math.sqrt(d)  # (T K)(T Q)^T
        return logits.softmax(dim=-1).view(n, h, num, num)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[1] != self.token_channels:
            raise ValueError(f'TokenTransformer expects tokens (N, {self.token_channels}, L), '
                             f'got {tuple(tokens.shape)}')
        n, c, num = tokens.shape
        h = self.num_heads
        attn = self.attention(tokens).view(n * h, num, num)
        v = tokens if self.value is None else self.value(tokens)
        # T + V A^T, the residual fused into the product
        tokens = torch.baddbmm(
            tokens.reshape(n * h, c // h, num), v.reshape(n * h, c // h, num),
            attn.transpose(1, 2)).view(n, c, num)
        if self.ffn is not None:
            tokens = tokens + self.ffn(tokens)
        return tokens


class TokenProjector(BaseModule):
    """Projector: ``X_out = X + softmax_L((X W_Q)(T W_K)^T) (T W_V)``.

    Every pixel queries the tokens and adds the attention-weighted token values to itself.
    :meth:`forward` runs the equation as written when ``fast_paths`` is False (the reference);
    otherwise the same result with the product reassociated where that is cheaper, the
    attention laid out (N, heads, L, HW), the residual fused into the last product and, without
    autograd and with ``inplace=True``, added onto ``X`` itself.

    Args:
        in_channels (int): Feature map channels C (also the output channels).
        token_channels (int): Token channels C_T.
        num_heads (int): Attention heads. Default: 1.
        qk_channels (int, optional): Key/query width. Default: C.
        query_groups (int): Groups of W_Q. Default: 1 (dense).
        key_groups (int): Groups of W_K. Default: 1.
        value_groups (int): Groups of W_V. Default: 1.
        init_cfg (dict, optional): Initialisation config.
    """
    fast_paths = True

    def __init__(self,
                 in_channels: int,
                 token_channels: int,
                 num_heads: int = 1,
                 qk_channels: Optional[int] = None,
                 query_groups: int = 1,
                 key_groups: int = 1,
                 value_groups: int = 1,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        qk_channels = in_channels if qk_channels is None else qk_channels
        for name, value in (('in_channels', in_channels), ('token_channels', token_channels),
                            ('num_heads', num_heads), ('qk_channels', qk_channels),
                            ('query_groups', query_groups), ('key_groups', key_groups),
                            ('value_groups', value_groups)):
            check_int('TokenProjector', name, value)
        _check_divisible(qk_channels, num_heads, 'qk_channels')
        _check_divisible(in_channels, num_heads, 'in_channels')
        for what, value, groups in (('in_channels', in_channels, query_groups),
                                    ('qk_channels', qk_channels, query_groups),
                                    ('token_channels', token_channels, key_groups),
                                    ('qk_channels', qk_channels, key_groups),
                                    ('token_channels', token_channels, value_groups),
                                    ('in_channels', in_channels, value_groups)):
            _check_divisible(value, groups, what)
        self.in_channels = in_channels
        self.num_heads = num_heads
        self.qk_channels = qk_channels
        self.query_groups = query_groups
        # No bias on W_Q: it keeps X (W_Q K^T) exactly equal to (X W_Q) K^T.
        self.query = PointwiseConv2d(
            in_channels, qk_channels, groups=query_groups, bias=False)  # W_Q
        self.key = PointwiseConv1d(token_channels, qk_channels, groups=key_groups,
                                   bias=False)  # W_K
        self.value = PointwiseConv1d(token_channels, in_channels, groups=value_groups)  # W_V

    def _fold_blocks(self) -> int:
        """Independent channel blocks of the folded query, or 0 when it cannot be folded.

        Head ``i`` reads the query channels ``[i d, (i+1) d)``; group ``j`` of ``W_Q`` maps input
        slice ``j`` to query slice ``j``. When one of heads / groups divides the other, each of
        ``min(heads, groups)`` blocks of input channels feeds whole heads only, so the key folds
        into ``W_Q`` block by block.
        """
        h, g = self.num_heads, self.query_groups
        return min(h, g) if h % g == 0 or g % h == 0 else 0

    def _fold_is_cheaper(self, num_pixels: int, num_tokens: int) -> bool:
        """Multiply-adds of X (W_Q K^T) against (X W_Q) K^T for this input size."""
        blocks = self._fold_blocks()
        if not blocks:
            return False
        h, g, qk, c = self.num_heads, self.query_groups, self.qk_channels, self.in_channels
        direct = num_pixels * qk * (c // g + num_tokens)
        folded = num_tokens * qk * c // g + h * num_tokens * (c // blocks) * num_pixels
        return folded < direct

    def _logits(self, x: Tensor, tokens: Tensor) -> Tensor:
        """Scaled attention logits (N, heads, L, HW)."""
        n, c, hgt, wid = x.shape
        num, hw = tokens.shape[2], hgt * wid
        h, g, qk = self.num_heads, self.query_groups, self.qk_channels
        d = qk // h
        k = self.key(tokens) * d**-0.5  # N, qk, L; the 1/sqrt(d) goes on the small side
        if self.fast_paths and self._fold_is_cheaper(hw, num):
            # X (W_Q K^T): fold the key into the query weight, block by block (see _fold_blocks)
            b = self._fold_blocks()
            # products of tensors of rank 4 at most (ncnn's limit with the batch axis)
            if g >= h:  # block = head = g/h whole groups: fold group by group, then gather
                r = g // h
                folded = torch.matmul(k.view(n, g, qk // g, num).transpose(2, 3),
                                      self.query.weight.view(g, qk // g, c // g))  # N,g,L,C/g
                folded = folded.view(n * h, r, num, c // g).transpose(1, 2)
            else:  # block = group = h/g whole heads
                w_q = self.query.weight.view(h, d, c // g)
                folded = torch.matmul(k.view(n, h, d, num).transpose(2, 3), w_q)  # N,h,L,C/g
            logits = torch.bmm(
                folded.reshape(n * b, (h // b) * num, c // b), x.reshape(n * b, c // b, hw))
        else:
            q = self.query(x).view(n * h, d, hw)
            logits = torch.bmm(k.view(n * h, d, num).transpose(1, 2), q)
        return logits.view(n, h, num, hw)

    def attention(self, x: Tensor, tokens: Tensor) -> Tensor:
        """Attention weights (N, heads, HW, L); each pixel's row sums to 1 over the L tokens."""
        return self._logits(x, tokens).softmax(dim=2).transpose(2, 3)

    def forward(self, x: Tensor, tokens: Tensor, inplace: bool = False) -> Tensor:
        """Returns the projected map (N, C, H, W).

        ``inplace=True`` (fast paths only) adds the token values onto ``x`` itself (saving a copy
        of the map) when no gradient is recorded; the caller must not read ``x`` afterwards. With
        autograd recording, ``x`` is needed for the backward pass and is never overwritten.
        """
        _check_feature(x, self.in_channels, type(self).__name__)
        n, c, hgt, wid = x.shape
        h, num = self.num_heads, tokens.shape[2]
        if not self.fast_paths:  # the equation, head by head
            d = self.qk_channels // h
            q = self.query(x).reshape(n, h, d, hgt * wid)
            k = self.key(tokens).reshape(n, h, d, num)
            v = self.value(tokens).reshape(n, h, c // h, num)
            attn = (q.transpose(2, 3) @ k / math.sqrt(d)).softmax(dim=-1)  # N, h, HW, L
            return x + (v @ attn.transpose(2, 3)).reshape(n, c, hgt, wid)
        attn = self._logits(x, tokens).softmax(dim=2)  # N, h, L, HW: over the L tokens
        v = self.value(tokens)  # N, C, L
        # X + V A per head, the residual fused into the product
        args = (v.view(n * h, c // h, num), attn.view(n * h, num, hgt * wid))
        if inplace and not torch.is_grad_enabled() and x.is_contiguous() and not tracing():
            return x.view(n * h, c // h, hgt * wid).baddbmm_(*args).view(n, c, hgt, wid)
        out = torch.baddbmm(x.reshape(n * h, c // h, hgt * wid), *args)
        return out.view(n, c, hgt, wid)


class VTModule(BaseModule):
    """One VT module: tokenizer (+ position encoding) -> transformer -> projector.

    Args:
        in_channels (int): Feature map channels C.
        token_channels (int): Token channels C_T.
        num_tokens (int): Tokens L (used by the filter-based tokenizer).
        tokenizer (str): ``'filter'`` (first module) or ``'recurrent'`` (later modules).
        with_pos_encoding (bool): Add the attention-based position encoding. Default: True.
        transformer_cfg (dict, optional): Extra arguments of :class:`TokenTransformer`.
        projector_cfg (dict, optional): Extra arguments of :class:`TokenProjector`.
        tokenizer_cfg (dict, optional): Extra arguments of the tokenizer.
        pos_cfg (dict, optional): Extra arguments of :class:`TokenPositionEncoding`.
        with_projector (bool): Project the tokens back onto the map. Default: True.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 token_channels: int,
                 num_tokens: int,
                 tokenizer: str = 'filter',
                 with_pos_encoding: bool = True,
                 transformer_cfg: Optional[dict] = None,
                 projector_cfg: Optional[dict] = None,
                 tokenizer_cfg: Optional[dict] = None,
                 pos_cfg: Optional[dict] = None,
                 with_projector: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        for name, value in (('in_channels', in_channels), ('token_channels', token_channels),
                            ('num_tokens', num_tokens)):
            check_int('VTModule', name, value)
        tokenizer_cfg = dict(tokenizer_cfg or {})
        if tokenizer == 'filter':
            self.tokenizer = FilterTokenizer(in_channels, token_channels, num_tokens,
                                             **tokenizer_cfg)
        elif tokenizer == 'recurrent':
            self.tokenizer = RecurrentTokenizer(in_channels, token_channels, **tokenizer_cfg)
        else:
            raise ValueError(f"tokenizer must be 'filter' or 'recurrent', got {tokenizer!r}")
        self.pos_encoding = TokenPositionEncoding(
            token_channels, **(pos_cfg or {})) if with_pos_encoding else None
        self.transformer = TokenTransformer(token_channels, **(transformer_cfg or {}))
        self.projector = TokenProjector(in_channels, token_channels, **(
            projector_cfg or {})) if with_projector else None

    def forward(self, x: Tensor, tokens: Optional[Tensor] = None, with_attention: bool = False):
        """Returns the (projected) feature map and the output tokens (N, C_T, L), plus, with
        ``with_attention``, the tokenizer's spatial attention (N, L', H, W)."""
        tokens, attn = self.tokenizer(x, tokens)
        if self.pos_encoding is not None:
            tokens = self.pos_encoding(tokens, attn)
        tokens = self.transformer(tokens)
        if self.projector is not None:
            x = self.projector(x, tokens)
        return (x, tokens, attn) if with_attention else (x, tokens)
