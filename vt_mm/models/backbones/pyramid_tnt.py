"""PyramidTNT: a pyramid Transformer-in-Transformer backbone.

Han et al., "PyramidTNT: Improved Transformer-in-Transformer Baselines with Pyramid
Architecture", https://arxiv.org/abs/2201.00978. Official classifier:
huawei-noah/Efficient-AI-Backbones, tnt_pytorch/pyramid_tnt.py.

An image becomes *visual sentences* (one token per 8x8 patch, like ViT's patch tokens) each made of
4x4 *visual words*. In each stage, inner (word) attention runs inside every sentence in the first
block (and the second when the stage has more than 6 blocks) and its result is added to the
sentence; outer (sentence) attention with linear spatial reduction relates the sentences. Between
stages both are halved in resolution by strided 3x3 convs (sentence and word aggregation).

Same parameters and outputs as the official model at its native resolution (Ti 192, S/M/B 256;
tested against the official state-dict layout). What vt-mm adds, so that it works for detection:

* **Any input size.** The official model is tied to its training grid: the absolute sentence
  position embedding (1, N, D) and the per-stage relative position bias (1, heads, N, N / sr^2) only
  fit that grid. We interpolate both to the current token grid: the position embedding bicubically
  over its 2-D grid; the relative bias bicubically first over the query grid and then over the key
  grid (both axes of the bias are flattened 2-D grids). At the native size nothing is
  interpolated, so outputs are identical. Inputs whose sides are not multiples of 8 (the sentence
  stride) are zero-padded at the bottom/right; later stages pad odd grids as the official word
  aggregation does.
* **Dense outputs** (``out_indices``), each layer-normalised (``norm{i}``; ``norm3`` is the
  official final norm), and optionally the paper's detection upsampling (stride-2 transposed
  conv + BN + GELU, 3x3 conv + BN + GELU) that moves the stage strides from 8/16/32/64 to
  4/8/16/32.
* Fused attention (``F.scaled_dot_product_attention`` with the relative bias as an additive mask);
  ``fused_attn=False`` computes softmax(q k^T * scale + bias) v explicitly, op for op as the
  official code, and serves as the reference in tests and benchmarks.
"""
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmcv.cnn.bricks.transformer import FFN
from mmengine.model.weight_init import trunc_normal_
from mmengine.registry import MODELS
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from torch import Tensor

from ..arg_checks import check_int, check_ints, check_number
from ..layers import TraceableGELU, tracing
from .base import (
    BackboneContract,
    pretrained_to_init_cfg,
    record_attention,
    recording_attention,
    resolve_arch,
)

WORDS_SIDE = 4  # every sentence holds 4x4 words
SENTENCE_STRIDE = 8  # pixels per sentence side in the first stage
# smallest input side: padded to 32 px, whose 4x4 first-stage grid holds one 4x4 spatial-reduction
# window (24 px gives 3x3 and fails)
MIN_INPUT_SIZE = 3 * SENTENCE_STRIDE + 1


def interpolate_grid(x: Tensor, src: Tuple[int, int], dst: Tuple[int, int], dim: int,
                     mode: str = 'bicubic') -> Tensor:
    """Resizes the flattened 2-D grid at dimension ``dim`` of ``x`` from ``src`` to ``dst``
    (a traced graph always resizes: ``dst`` is the input's size, which varies).

    Not mmpretrain's ``resize_pos_embed``: that one resizes one grid of (1, L, C) embeddings,
    while the relative position bias has two (queries and keys, dims 2 and 3), and it returns
    its input when the sizes match, which an ONNX trace at the native size would freeze.
    """
    if tuple(src) == tuple(dst) and not tracing():
        return x
    # explicit permutations: the ONNX exporter writes movedim(dim, -1) with a negative axis
    rank = x.dim()
    order = [i for i in range(rank) if i != dim] + [dim]
    x = x.permute(order)
    lead = x.shape[:-1]
    grid = x.reshape(1, -1, src[0], src[1])
    grid = F.interpolate(grid, size=dst, mode=mode, align_corners=False)
    back = list(range(dim)) + [rank - 1] + list(range(dim, rank - 1))
    return grid.reshape(*lead, dst[0] * dst[1]).permute(back)


def mlp(dim: int, hidden: int, drop: float) -> FFN:
    """Linear - GELU - Dropout - Linear - Dropout, the official ``Mlp``, as mmcv's ``FFN``
    (without its residual: the block adds it). Keys ``layers.0.0.*`` / ``layers.1.*`` stand for
    the official ``fc1.*`` / ``fc2.*`` (the converter renames them)."""
    return FFN(dim, hidden, act_cfg=dict(type=TraceableGELU), ffn_drop=drop, add_identity=False)


class SRAttention(nn.Module):
    """Multi-head attention with linear spatial reduction of keys/values.

    With ``sr_ratio`` > 1 the keys and values come from the token grid average-pooled by
    ``sr_ratio`` and passed through Linear + LayerNorm.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, attn_drop: float = 0.,
                 proj_drop: float = 0., sr_ratio: int = 1, fused_attn: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} must be divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.scale = (dim // num_heads)**-0.5
        self.sr_ratio = sr_ratio
        self.fused_attn = fused_attn
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Linear(dim, dim)
            self.sr_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, hw: Optional[Tuple[int, int]],
                bias: Optional[Tensor] = None) -> Tensor:
        """``x`` (B, N, C) tokens of an ``hw`` grid (read only when ``sr_ratio`` > 1), ``bias``
        an additive attention bias (B or 1, heads, N, N / sr^2)."""
        b, n, c = x.shape
        h = self.num_heads
        q = self.q(x).reshape(b, n, h, c // h).transpose(1, 2)
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(b, c, hw[0], hw[1])
            # sr x sr windows, stride sr (avg_pool2d's stride defaults to the kernel size)
            grid = F.avg_pool2d(grid, self.sr_ratio).flatten(2).transpose(1, 2)
            x = self.sr_norm(self.sr(grid))
        kv = self.kv(x)  # keys then values along the channels; split before the head reshape
        k = kv[..., :c].reshape(b, -1, h, c // h).transpose(1, 2)  # (4-D at most, for ncnn)
        v = kv[..., c:].reshape(b, -1, h, c // h).transpose(1, 2)
        if self.fused_attn and not recording_attention(self):
            mask = None
            if bias is not None:
                # A mask that requires grad sends SDPA from the CPU flash kernel to its ~2.5x slower
                # math backend; without autograd the bias needs no grad.
                mask = (bias if torch.is_grad_enabled() else bias.detach()).to(q.dtype)
            # the scale given (SDPA's default, 1/sqrt(head dim)): otherwise the ONNX export
            # computes it from the tensor's shape (Shape, Gather, Cast, Sqrt per attention), which
            # static graphs keep unfolded
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.attn_drop.p if self.training else 0.,
                scale=self.scale)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            if bias is not None:
                attn = attn + bias
            attn = attn.softmax(dim=-1)
            record_attention(self, attn)
            out = self.attn_drop(attn) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class TNTBlock(nn.Module):
    """A PyramidTNT block: optional inner (word) attention + MLP, then outer (sentence) ones.

    The word LayerNorms normalise all 16 words of a sentence jointly (over 16 * word_dim), as the
    official model does.
    """

    def __init__(self, dim: int, word_dim: int, num_heads: int, word_heads: int,
                 with_words: bool, mlp_ratio: float, qkv_bias: bool, drop: float,
                 attn_drop: float, drop_path: float, sr_ratio: int, fused_attn: bool):
        # no defaults: the stage passes every setting (the backbone's Args hold the defaults)
        super().__init__()
        self.with_words = with_words
        num_words = WORDS_SIDE * WORDS_SIDE
        if with_words:
            self.word_norm1 = nn.LayerNorm(num_words * word_dim)
            self.word_attn = SRAttention(word_dim, word_heads, qkv_bias, attn_drop, drop,
                                         fused_attn=fused_attn)
            self.word_norm2 = nn.LayerNorm(num_words * word_dim)
            self.word_mlp = mlp(word_dim, int(word_dim * mlp_ratio), drop)
            self.word_proj_norm1 = nn.LayerNorm(num_words * word_dim)
            self.word_proj = nn.Linear(num_words * word_dim, dim, bias=False)
            self.word_proj_norm2 = nn.LayerNorm(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SRAttention(dim, num_heads, qkv_bias, attn_drop, drop, sr_ratio, fused_attn)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, words: Tensor, sentences: Tensor, hw: Tuple[int, int],
                bias: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        b, n, _ = sentences.shape
        if self.with_words:
            per_sentence = words.shape[1]
            w = self.word_norm1(words.reshape(b, n, -1)).reshape(b * n, per_sentence, -1)
            words = words + self.drop_path(self.word_attn(w, None))  # sr 1: no grid
            w = self.word_norm2(words.reshape(b, n, -1)).reshape(b * n, per_sentence, -1)
            words = words + self.drop_path(self.word_mlp(w))
            sentences = sentences + self.word_proj_norm2(
                self.word_proj(self.word_proj_norm1(words.reshape(b, n, -1))))
        sentences = sentences + self.drop_path(self.attn(self.norm1(sentences), hw, bias))
        sentences = sentences + self.drop_path(self.mlp(self.norm2(sentences)))
        return words, sentences


class SentenceAggregation(nn.Module):
    """LayerNorm + 3x3 stride-2 conv over the sentence grid."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim_in)
        self.conv = nn.Conv2d(dim_in, dim_out, 3, stride=2, padding=1)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tuple[Tensor, Tuple[int, int]]:
        b, n, c = x.shape
        x = self.norm(x).transpose(1, 2).reshape(b, c, hw[0], hw[1])
        x = self.conv(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class WordAggregation(nn.Module):
    """LayerNorm, stitch the words of 2x2 neighbouring sentences into 8x8, 3x3 stride-2 conv.

    Odd sentence grids are zero-padded at the bottom/right first (as the official code does to
    fit detection sizes).
    """

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.dim_out = dim_out
        self.norm = nn.LayerNorm(dim_in)
        self.conv = nn.Conv2d(dim_in, dim_out, 3, stride=2, padding=1)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        s = WORDS_SIDE
        c = x.shape[-1]
        rows, cols = hw
        # the words as one image (N, C, rows*s, cols*s): sentence (p, q) covers rows p*s.. and
        # columns q*s..; then 2s x 2s tiles of it, one per 2x2 sentences, row-major. Only
        # reshapes and 4-D permutes (no 6-D tensors, no strided slices), which every runtime
        # has, ncnn included; the same values as stitching the neighbours' word grids.
        x = self.norm(x).reshape(-1, cols, s, s * c).permute(0, 2, 1, 3)  # N*rows, s, cols, s*c
        x = x.reshape(-1, rows * s, cols * s, c).permute(0, 3, 1, 2)
        pad_h, pad_w = rows % 2, cols % 2
        if pad_h or pad_w or tracing():  # traced: the padding depends on the input size
            x = F.pad(x, (0, pad_w * s, 0, pad_h * s))
        n = x.shape[0]
        out_rows, out_cols = x.shape[2] // (2 * s), x.shape[3] // (2 * s)
        x = x.reshape(n * c * out_rows, 2 * s, out_cols, 2 * s).permute(0, 2, 1, 3)
        x = x.reshape(n, c, out_rows * out_cols, 4 * s * s).permute(0, 2, 1, 3)
        x = self.conv(x.reshape(-1, c, 2 * s, 2 * s))
        return x.reshape(-1, self.dim_out, s * s).transpose(1, 2)


class Stem(nn.Module):
    """Conv stem: a shared 3x3 stride-2 conv, then a word branch (3x3 conv, 4x4 unfold into 16
    words per sentence) and a sentence branch (3x3 convs with strides 2, 2, 1)."""

    def __init__(self, in_channels: int, dim: int, word_dim: int, norm_cfg: dict):
        super().__init__()

        def conv(cin, cout, stride, inplace=True):
            return ConvModule(cin, cout, 3, stride=stride, padding=1, bias=True, norm_cfg=norm_cfg,
                              act_cfg=dict(type='ReLU', inplace=inplace))

        self.word_dim = word_dim
        self.common = conv(in_channels, word_dim * 2, 2)
        self.word_branch = conv(word_dim * 2, word_dim, 1, inplace=False)
        self.sentence_branch = nn.Sequential(
            conv(word_dim * 2, word_dim * 4, 2), conv(word_dim * 4, word_dim * 8, 2),
            conv(word_dim * 8, dim, 1, inplace=False))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        b = x.shape[0]
        x = self.common(x)
        words = self.word_branch(x)
        # the 4x4 words of each sentence, sentences row-major, words row-major inside: what
        # F.unfold(kernel 4, stride 4) gives, written with 4-D reshapes and permutes (unfold
        # exports as a 6-D transpose, which ncnn lacks)
        s, c = WORDS_SIDE, self.word_dim
        rows, cols = words.shape[2] // s, words.shape[3] // s
        words = words[:, :, :rows * s, :cols * s].reshape(b * c * rows, s, cols, s)
        words = words.permute(0, 2, 1, 3).reshape(b, c, rows * cols, s * s).permute(0, 2, 3, 1)
        sentences = self.sentence_branch(x)
        hw = (sentences.shape[2], sentences.shape[3])
        return words.reshape(-1, s * s, c), sentences.flatten(2).transpose(1, 2), hw


class PyramidTNTStage(nn.Module):
    """Aggregation from the previous stage (if any), then TNT blocks sharing one relative bias."""

    def __init__(self, sr_ratio: int, depth: int, dim: int, word_dim: int, num_heads: int,
                 word_heads: int, native_hw: Tuple[int, int], prev_dims: Optional[Tuple[int, int]],
                 drop_paths: Sequence[float], fused_attn: bool, **block_kw):
        super().__init__()
        sr = sr_ratio
        if prev_dims is not None:
            self.word_merge = WordAggregation(prev_dims[1], word_dim)
            self.sentence_merge = SentenceAggregation(prev_dims[0], dim)
        self.blocks = nn.ModuleList([
            TNTBlock(dim, word_dim, num_heads, word_heads,
                     with_words=(j == 0 or (j == 1 and depth > 6)), drop_path=drop_paths[j],
                     sr_ratio=sr, fused_attn=fused_attn, **block_kw) for j in range(depth)
        ])
        self.sr_ratio = sr
        self.native_hw = tuple(native_hw)
        self.native_kv_hw = (native_hw[0] // sr, native_hw[1] // sr)
        self.relative_pos = nn.Parameter(
            torch.randn(1, num_heads, native_hw[0] * native_hw[1],
                        self.native_kv_hw[0] * self.native_kv_hw[1]))

    def relative_bias(self, hw: Tuple[int, int]) -> Tensor:
        """The relative position bias for a ``hw`` sentence grid (bicubic over the query grid,
        then the key grid)."""
        kv_hw = (hw[0] // self.sr_ratio, hw[1] // self.sr_ratio)
        if kv_hw[0] == 0 or kv_hw[1] == 0:
            raise ValueError(f'the sentence grid {hw} is smaller than the spatial-reduction ratio '
                             f'{self.sr_ratio}: the input image is too small for PyramidTNT '
                             f'(need at least {MIN_INPUT_SIZE} pixels per side; smaller sizes '
                             f'are zero-padded to a multiple of {SENTENCE_STRIDE} first)')
        bias = interpolate_grid(self.relative_pos, self.native_hw, hw, dim=2)
        return interpolate_grid(bias, self.native_kv_hw, kv_hw, dim=3)

    def forward(self, words, sentences, hw, with_cp: bool):
        if hasattr(self, 'word_merge'):
            words = self.word_merge(words, hw)
            sentences, hw = self.sentence_merge(sentences, hw)
        bias = self.relative_bias(hw)
        for blk in self.blocks:
            if with_cp and sentences.requires_grad:
                words, sentences = cp.checkpoint(
                    blk, words, sentences, hw, bias, use_reentrant=False)
            else:
                words, sentences = blk(words, sentences, hw, bias)
        return words, sentences, hw


@MODELS.register_module()
class PyramidTNT(BackboneContract, BaseBackbone):
    """PyramidTNT backbone (classification and dense prediction).

    Args:
        arch (str | dict): 'tiny'/'ti'/'t', 'small'/'s', 'medium'/'m', 'base'/'b', or a dict with
            depths, dims, word_dims, num_heads, word_heads (optional: sr_ratios, default
            [4, 2, 1, 1]; img_size); an unknown name raises ``UnknownArchError``.
        img_size (int | tuple, optional): Native (pre-training) resolution that sizes the position
            embeddings. Default: the arch's (Ti 192, others 256).
        in_channels (int): Input channels. Default: 3.
        out_indices (Sequence[int]): Stages to output. Default: (3, ).
        upsample (bool): The paper's detection upsampling of every output (strides 8/16/32/64 ->
            4/8/16/32). Default: False.
        mlp_ratio (float): MLP expansion. Default: 4.
        qkv_bias (bool): Bias on q/kv. Default: False.
        drop_rate (float): Dropout. Default: 0.
        attn_drop_rate (float): Attention dropout. Default: 0.
        drop_path_rate (float): Stochastic depth, linear over all blocks. Default: 0.1.
        norm_cfg (dict): Norm of the conv stem and the upsampling. Default: BN.
        fused_attn (bool): Use fused scaled-dot-product attention. Default: True.
        frozen_stages (int): Freeze the stem and position embeddings (>= 0) and stages 0..k-1 (k).
            -1 freezes nothing. Default: -1.
        norm_eval (bool): Keep BN layers in eval mode while training. Default: False.
        with_cp (bool): Gradient checkpointing of every block (saves memory). Default: False.
        pretrained (str, optional): Deprecated; same as init_cfg=dict(type='Pretrained', ...).
        init_cfg (dict, optional): Initialisation config.
    """
    arch_zoo: Dict[str, dict] = {
        'tiny': dict(depths=[2, 6, 3, 2], dims=[80, 160, 320, 320], word_dims=[5, 10, 20, 20],
                     num_heads=[2, 4, 8, 8], word_heads=[1, 2, 4, 4], sr_ratios=[4, 2, 1, 1],
                     img_size=192),
        'small': dict(depths=[2, 8, 4, 2], dims=[128, 256, 512, 512], word_dims=[8, 16, 32, 32],
                      num_heads=[4, 8, 16, 16], word_heads=[2, 4, 8, 8], sr_ratios=[4, 2, 1, 1],
                      img_size=256),
        'medium': dict(depths=[2, 8, 6, 2], dims=[192, 384, 768, 768], word_dims=[12, 24, 48, 48],
                       num_heads=[4, 8, 16, 16], word_heads=[2, 4, 8, 8], sr_ratios=[4, 2, 1, 1],
                       img_size=256),
        'base': dict(depths=[2, 10, 6, 2], dims=[256, 512, 1024, 1024],
                     word_dims=[16, 32, 64, 64], num_heads=[4, 8, 16, 16],
                     word_heads=[2, 4, 8, 8], sr_ratios=[4, 2, 1, 1], img_size=256),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 img_size: Optional[Union[int, Tuple[int, int]]] = None,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (3, ),
                 upsample: bool = False,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = False,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 fused_attn: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(pretrained_to_init_cfg('PyramidTNT', pretrained, init_cfg))
        arch = resolve_arch('PyramidTNT', arch, self.arch_zoo,
                            required={'depths', 'dims', 'word_dims', 'num_heads', 'word_heads'})
        arch.setdefault('sr_ratios', [4, 2, 1, 1])
        self.arch = dict(arch)
        img_size = img_size or arch.get('img_size', 224)
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        # the native grids of the position tables: the stride-64 stage must be at least 1x1
        check_ints('PyramidTNT', 'img_size', img_size, minimum=SENTENCE_STRIDE * 8)
        check_int('PyramidTNT', 'in_channels', in_channels)
        check_number('PyramidTNT', 'mlp_ratio', mlp_ratio, 0, float('inf'), low_inclusive=False)
        for name, rate in (('drop_rate', drop_rate), ('attn_drop_rate', attn_drop_rate),
                           ('drop_path_rate', drop_path_rate)):
            check_number('PyramidTNT', name, rate, 0, 1)
        check_int('PyramidTNT', 'frozen_stages', frozen_stages, minimum=-1, maximum=4)
        self.img_size = img_size
        out_indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        for i in out_indices:
            if not 0 <= i < 4:
                raise ValueError(f'out_indices must be in 0..3, got {out_indices}')
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        dims, word_dims = arch['dims'], arch['word_dims']
        self.num_features = dims[-1]

        self.stem = Stem(in_channels, dims[0], word_dims[0], norm_cfg)
        native = (img_size[0] // SENTENCE_STRIDE, img_size[1] // SENTENCE_STRIDE)
        self.sentence_pos = nn.Parameter(torch.zeros(1, native[0] * native[1], dims[0]))
        self.word_pos = nn.Parameter(torch.zeros(1, WORDS_SIDE * WORDS_SIDE, word_dims[0]))
        self.pos_drop = nn.Dropout(drop_rate)
        self.native_hw = native

        dpr = torch.linspace(0, drop_path_rate, sum(arch['depths'])).tolist()
        self.stages = nn.ModuleList()
        start = 0
        for i, depth in enumerate(arch['depths']):
            stage_hw = (native[0] // 2**i, native[1] // 2**i)
            self.stages.append(
                PyramidTNTStage(
                    arch['sr_ratios'][i], depth, dims[i], word_dims[i], arch['num_heads'][i],
                    arch['word_heads'][i],
                    stage_hw, None if i == 0 else (dims[i - 1], word_dims[i - 1]),
                    dpr[start:start + depth], fused_attn, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                    drop=drop_rate, attn_drop=attn_drop_rate))
            start += depth
        for i in out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(dims[i]))
        self.upsample = upsample
        if upsample:
            self.upsamples = nn.ModuleList()
            for i in out_indices:
                d = dims[i]
                self.upsamples.append(nn.Sequential(
                    nn.ConvTranspose2d(d, d, 2, stride=2), build_norm_layer(norm_cfg, d)[1],
                    TraceableGELU(), nn.Conv2d(d, d, 3, padding=1, bias=False),
                    build_norm_layer(norm_cfg, d)[1], TraceableGELU()))
        self._freeze_stages()

    def init_weights(self):
        if self.init_cfg is not None:
            super().init_weights()
            return
        # as the official model: trunc-normal linears and position embeddings, He-normal convs
        trunc_normal_(self.sentence_pos, std=.02)
        trunc_normal_(self.word_pos, std=.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _frozen_parts(self):
        """Stem and position embeddings, stages ``0..frozen_stages-1`` and their output norms."""
        parts = [self.stem, self.sentence_pos, self.word_pos]
        parts += list(self.stages[:self.frozen_stages])
        parts += [getattr(self, f'norm{i}') for i in self.out_indices if i < self.frozen_stages]
        return parts

    def _attention_modules(self) -> List[nn.Module]:
        """``attention_maps(x)``: the outer (sentence) attention of every block, (B, heads,
        H_i W_i, H_i W_i / sr_i^2) with the relative position bias included; each query row sums
        to 1."""
        return [blk.attn for stage in self.stages for blk in stage.blocks]

    def set_fused_attn(self, fused: bool) -> None:
        """Switches every attention between the fused kernel and the explicit softmax path."""
        for m in self.modules():
            if isinstance(m, SRAttention):
                m.fused_attn = fused

    def no_weight_decay(self):
        """Parameter names to exclude from weight decay (as the official model)."""
        return {'sentence_pos', 'word_pos'}

    def _pad(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % SENTENCE_STRIDE, -w % SENTENCE_STRIDE
        return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w or tracing() else x

    def embed(self, x: Tensor) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """Words (B*N, 16, word_dim) and sentences (B, N, D) with their position embeddings,
        and the sentence grid size: what the first stage takes."""
        words, sentences, hw = self.stem(self._pad(x))
        words = words + self.word_pos
        pos = interpolate_grid(self.sentence_pos, self.native_hw, hw, dim=1)
        return words, sentences + self.pos_drop(pos), hw

    def forward_features(self, x: Tensor) -> List[Tuple[Tensor, Tuple[int, int]]]:
        """Sentence tokens (B, N, D) and grid size after every stage."""
        if x.dim() != 4:
            raise ValueError(f'PyramidTNT expects images (N, C, H, W), got {tuple(x.shape)}')
        in_channels = self.stem.common.conv.in_channels
        if x.shape[1] != in_channels:
            raise ValueError(f'PyramidTNT was built for {in_channels} input channels, got an input '
                             f'with {x.shape[1]} (shape {tuple(x.shape)})')
        words, sentences, hw = self.embed(x)
        feats = []
        for stage in self.stages:
            words, sentences, hw = stage(words, sentences, hw, self.with_cp)
            feats.append((sentences, hw))
        return feats

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        feats = self.forward_features(x)
        outs = []
        for k, i in enumerate(self.out_indices):
            tokens, hw = feats[i]
            tokens = getattr(self, f'norm{i}')(tokens)
            out = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, hw[0], hw[1])
            if self.upsample:
                out = self.upsamples[k](out)
            outs.append(out.contiguous())
        return tuple(outs)


# official key (prefix) -> vt-mm key (prefix); applied in order, first match wins
_OFFICIAL_RENAMES = (
    ('patch_embed.common_conv.0.', 'stem.common.conv.'),
    ('patch_embed.common_conv.1.', 'stem.common.bn.'),
    ('patch_embed.inner_convs.0.', 'stem.word_branch.conv.'),
    ('patch_embed.inner_convs.1.', 'stem.word_branch.bn.'),
    ('patch_embed.outer_convs.0.', 'stem.sentence_branch.0.conv.'),
    ('patch_embed.outer_convs.1.', 'stem.sentence_branch.0.bn.'),
    ('patch_embed.outer_convs.3.', 'stem.sentence_branch.1.conv.'),
    ('patch_embed.outer_convs.4.', 'stem.sentence_branch.1.bn.'),
    ('patch_embed.outer_convs.6.', 'stem.sentence_branch.2.conv.'),
    ('patch_embed.outer_convs.7.', 'stem.sentence_branch.2.bn.'),
    ('outer_pos', 'sentence_pos'),
    ('inner_pos', 'word_pos'),
    ('norm.', 'norm3.'),
)
_BLOCK_RENAMES = (
    ('inner_norm1.', 'word_norm1.'), ('inner_attn.', 'word_attn.'),
    ('inner_norm2.', 'word_norm2.'), ('inner_mlp.', 'word_mlp.'),
    ('proj_norm1.', 'word_proj_norm1.'), ('proj.', 'word_proj.'),
    ('proj_norm2.', 'word_proj_norm2.'), ('outer_norm1.', 'norm1.'),
    ('outer_attn.linear.', 'attn.sr.'), ('outer_attn.norm.', 'attn.sr_norm.'),
    ('outer_attn.', 'attn.'), ('outer_norm2.', 'norm2.'), ('outer_mlp.', 'mlp.'))


def checkpoint_filter_fn(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Official PyramidTNT state_dict -> :class:`PyramidTNT` keys (backbone-local, timm's
    contract). The classifier ``head.*`` is left out; the converter tool
    (tools/model_converters/pyramid_tnt2mmpretrain.py) adds it as mmpretrain's ``head.fc.*``
    and the ``backbone.`` prefix.

    ``word_merges.k`` / ``sentence_merges.k`` move into ``stages.(k+1)``; blocks use the paper's
    names (word = inner, sentence = outer); the final ``norm`` becomes ``norm3``.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith('head.'):  # the classifier: not a backbone weight
            continue
        new = key
        if key.startswith(('word_merges.', 'sentence_merges.')):
            kind, idx, rest = key.split('.', 2)
            rest = rest.replace('conv.0.', 'conv.')
            new = f'stages.{int(idx) + 1}.{kind[:-7]}_merge.{rest}'
        elif re.match(r'^stages\.\d+\.blocks\.\d+\.', key):
            head, j, rest = re.match(r'^(stages\.\d+)\.blocks\.(\d+)\.(.+)$', key).groups()
            for old, repl in _BLOCK_RENAMES:
                if rest.startswith(old):
                    rest = repl + rest[len(old):]
                    break
            # the MLPs are mmcv FFNs: fc1 -> layers.0.0, fc2 -> layers.1
            rest = rest.replace('mlp.fc1.', 'mlp.layers.0.0.').replace('mlp.fc2.', 'mlp.layers.1.')
            new = f'{head}.blocks.{j}.{rest}'
        else:
            for old, repl in _OFFICIAL_RENAMES:
                if key.startswith(old):
                    new = repl + key[len(old):]
                    break
        out[new] = value
    return out
