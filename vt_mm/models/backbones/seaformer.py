"""SeaFormer: squeeze-enhanced axial transformer for mobile semantic segmentation.

Wan et al., "SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic Segmentation",
ICLR 2023, https://arxiv.org/abs/2301.13156. Official code (mmseg 0.x): fudan-zvg/SeaFormer.

Faithful to the official model to the last parameter (backbone + LightHead with 150 classes:
1,667,318 / 3,990,118 / 8,605,654 / 13,951,510 for T/S/B/L; classifier 1,781,096 / 4,105,656 /
8,742,664 / 14,046,504) and to its forward computation:

* MobileNetV2 inverted-residual stages (ReLU) at strides 4, 8, 16, 32, 64, exact per-variant
  tables from the official configs (``arch_zoo``);
* SeaFormer blocks (``x + attn(x)``, ``x + mlp(x)``, ReLU6, no pre-norm) on the last two stages
  (three for L) with squeeze-enhanced axial attention: a detail branch (3x3 depthwise + 1x1 over
  concat(q, k, v)) gated by hard-sigmoid of the squeezed row/column attention;
* 1-D positional embeddings of length 16, linearly interpolated (``align_corners=False``) to the
  actual height/width, so any input size works;
* outputs: T/S/B [1/8, 1/32, 1/64], L [1/8, 1/16, 1/32, 1/64].

Speed and deployment: :meth:`SeaFormer.switch_to_deploy` folds every Conv-BN pair into one conv
and stores the weights channels-last (outputs unchanged within float error, 1.3-1.7x faster on
the CPU); the whole segmentor exports to ONNX (``tools/deployment/export_onnx.py``).

Module names are vt-mm's own; :func:`checkpoint_filter_fn` converts the authors' classification
and segmentation checkpoints.
"""
import re
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks import DropPath
from mmengine.registry import MODELS
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import InvertedResidual
from torch import Tensor

from ..arg_checks import check_int, check_number
from ..folding import fold_conv_bn
from .base import BackboneContract, pretrained_to_init_cfg, record_attention, resolve_arch

__all__ = ['SeaFormer', 'checkpoint_filter_fn', 'convert_head_keys']


def conv_bn(in_channels, out_channels, kernel_size=1, stride=1, groups=1, bn_weight_init=1.0, *,
            norm_cfg) -> ConvModule:
    """The official ``Conv2d_BN`` unit (conv without bias, then norm, no activation) as mmcv's
    ``ConvModule``: same parameters, same state-dict keys (``conv.*``, ``bn.*``), same outputs.

    The BN affine terms start at ``bn_weight_init`` / 0 as the official unit sets them.
    ``ConvModule.init_weights`` (Kaiming conv, BN weight 1) does not run for the backbone:
    :meth:`SeaFormer.init_weights` applies the official initialisation instead, and with a
    ``Pretrained`` init_cfg the checkpoint overwrites every parameter.
    """
    module = ConvModule(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                        groups=groups, bias=False, norm_cfg=norm_cfg, act_cfg=None)
    nn.init.constant_(module.bn.weight, bn_weight_init)
    nn.init.constant_(module.bn.bias, 0)
    return module


class AxialPositionEmbedding(nn.Module):
    """Learned 1-D embedding (C, length), linearly resized to the squeezed axis."""

    def __init__(self, channels, length=16):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, channels, length))

    def forward(self, x):  # x: N, C, L
        return x + F.interpolate(self.pos_embed, size=x.shape[-1], mode='linear',
                                 align_corners=False)


class SeaAttention(nn.Module):
    """Squeeze-enhanced axial attention with detail enhancement.

    q, k: ``heads * key_dim`` channels, v: ``heads * attn_ratio * key_dim``. The squeezed
    branch averages q/k/v over W (rows) and over H (columns), adds the axial position
    embeddings to q and k, attends along each axis, and broadcasts row + column + v back to
    H x W; its hard-sigmoid gates the detail branch (depthwise 3x3 + 1x1 over concat(q, k, v)).
    """

    def __init__(self, dim, key_dim, num_heads, attn_ratio, norm_cfg):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim**-0.5
        qk = key_dim * num_heads
        self.value_dim = int(attn_ratio * key_dim) * num_heads
        vd = self.value_dim
        self.q = conv_bn(dim, qk, norm_cfg=norm_cfg)
        self.k = conv_bn(dim, qk, norm_cfg=norm_cfg)
        self.v = conv_bn(dim, vd, norm_cfg=norm_cfg)
        # ReLU6 then conv-BN; BN weight initialised to 0 as the official code
        self.row_proj = conv_bn(vd, vd, bn_weight_init=0, norm_cfg=norm_cfg)
        self.col_proj = conv_bn(vd, vd, bn_weight_init=0, norm_cfg=norm_cfg)
        self.out_proj = conv_bn(vd, dim, bn_weight_init=0, norm_cfg=norm_cfg)
        self.row_pos_q = AxialPositionEmbedding(qk)
        self.row_pos_k = AxialPositionEmbedding(qk)
        self.col_pos_q = AxialPositionEmbedding(qk)
        self.col_pos_k = AxialPositionEmbedding(qk)
        self.detail_dw = conv_bn(2 * qk + vd, 2 * qk + vd, 3, groups=2 * qk + vd, norm_cfg=norm_cfg)
        self.detail_pw = conv_bn(2 * qk + vd, dim, norm_cfg=norm_cfg)

    def _axial(self, q, k, v, pos_q, pos_k):
        """Multi-head attention along one squeezed axis: q, k (N, qk, L), v (N, vd, L); returns
        the output (N, vd, L) and the weights (N, heads, L, L)."""
        n, _, length = q.shape
        h = self.num_heads
        q = pos_q(q).reshape(n, h, -1, length).transpose(2, 3)  # N, h, L, d
        k = pos_k(k).reshape(n, h, -1, length)  # N, h, d, L
        v = v.reshape(n, h, -1, length).transpose(2, 3)  # N, h, L, dv
        attn = (torch.matmul(q, k) * self.scale).softmax(dim=-1)
        return torch.matmul(attn, v).transpose(2, 3).reshape(n, self.value_dim, length), attn

    def forward(self, x):
        n, _, hgt, wid = x.shape
        q, k, v = self.q(x), self.k(x), self.v(x)
        detail = self.detail_pw(F.relu6(self.detail_dw(torch.cat([q, k, v], dim=1))))
        rows, row_attn = self._axial(q.mean(-1), k.mean(-1), v.mean(-1), self.row_pos_q,
                                     self.row_pos_k)
        cols, col_attn = self._axial(q.mean(-2), k.mean(-2), v.mean(-2), self.col_pos_q,
                                     self.col_pos_k)
        record_attention(self, (row_attn, col_attn))
        rows = self.row_proj(F.relu6(rows.unsqueeze(3)))  # N, vd, H, 1
        cols = self.col_proj(F.relu6(cols.unsqueeze(2)))  # N, vd, 1, W
        gate = self.out_proj(F.relu6(v + rows + cols))
        return F.hardsigmoid(gate) * detail


class ConvMlp(nn.Module):
    """1x1 conv-BN -> 3x3 depthwise conv (bias) -> ReLU6 -> 1x1 conv-BN."""

    def __init__(self, dim, hidden, norm_cfg):
        super().__init__()
        self.fc1 = conv_bn(dim, hidden, norm_cfg=norm_cfg)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = conv_bn(hidden, dim, norm_cfg=norm_cfg)

    def forward(self, x):
        return self.fc2(F.relu6(self.dwconv(self.fc1(x))))


class SeaFormerBlock(nn.Module):
    """``x + attn(x)``, ``x + mlp(x)`` with stochastic depth; no normalisation layers."""

    def __init__(self, dim, key_dim, num_heads, mlp_ratio, attn_ratio, drop_path, norm_cfg):
        super().__init__()
        self.attn = SeaAttention(dim, key_dim, num_heads, attn_ratio, norm_cfg)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), norm_cfg)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


@MODELS.register_module()
class SeaFormer(BackboneContract, BaseBackbone):
    """SeaFormer backbone (T/S/B/L).

    Args:
        arch (str | dict): 'tiny', 'small', 'base', 'large' (or 't'/'s'/'b'/'l'), or a dict with
            the keys of :attr:`arch_zoo`; an unknown name raises ``UnknownArchError``.
        in_channels (int): Image channels. Default: 3.
        out_indices (Sequence[int], optional): Which of the official outputs to return (T/S/B:
            0 = 1/8, 1 = 1/32, 2 = 1/64; L: 0 = 1/8, 1 = 1/16, 2 = 1/32, 3 = 1/64). Default: all,
            as the official segmentation backbone; classification uses (-1,).
        drop_path_rate (float): Stochastic depth, linear from 0 within each SeaFormer stage as
            the official code. Default: 0.1.
        norm_cfg (dict): Normalisation. Default: BN.
        frozen_stages (int): Freeze the first ``frozen_stages`` inverted-residual stages
            (stem included); -1 freezes nothing. Default: -1.
        norm_eval (bool): Keep BN in eval mode while training. Default: False.
        pretrained (str, optional): Deprecated (mmseg's ``EncoderDecoder`` passes it); same as
            ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg (dict, optional): Initialisation config, e.g. Pretrained.
    """

    # stage tables: [kernel, expansion, out channels, stride] per inverted residual (official)
    arch_zoo = {
        'tiny': dict(
            mv2=[[[3, 1, 16, 1], [3, 4, 16, 2], [3, 3, 16, 1]],
                 [[5, 3, 32, 2], [5, 3, 32, 1]],
                 [[3, 3, 64, 2], [3, 3, 64, 1]],
                 [[5, 3, 128, 2]],
                 [[3, 6, 160, 2]]],
            stem_channels=16, emb_dims=[128, 160], key_dims=[16, 24], depths=[2, 2],
            num_heads=4, mlp_ratios=[2, 4]),
        'small': dict(
            mv2=[[[3, 1, 16, 1], [3, 4, 24, 2], [3, 3, 24, 1]],
                 [[5, 3, 48, 2], [5, 3, 48, 1]],
                 [[3, 3, 96, 2], [3, 3, 96, 1]],
                 [[5, 4, 160, 2]],
                 [[3, 6, 192, 2]]],
            stem_channels=16, emb_dims=[160, 192], key_dims=[16, 24], depths=[3, 3],
            num_heads=6, mlp_ratios=[2, 4]),
        'base': dict(
            mv2=[[[3, 1, 16, 1], [3, 4, 32, 2], [3, 3, 32, 1]],
                 [[5, 3, 64, 2], [5, 3, 64, 1]],
                 [[3, 3, 128, 2], [3, 3, 128, 1]],
                 [[5, 4, 192, 2]],
                 [[3, 6, 256, 2]]],
            stem_channels=16, emb_dims=[192, 256], key_dims=[16, 24], depths=[4, 4],
            num_heads=8, mlp_ratios=[2, 4]),
        'large': dict(
            mv2=[[[3, 3, 32, 1], [3, 4, 64, 2], [3, 4, 64, 1]],
                 [[5, 4, 128, 2], [5, 4, 128, 1]],
                 [[3, 4, 192, 2], [3, 4, 192, 1]],
                 [[5, 4, 256, 2]],
                 [[3, 6, 320, 2]]],
            stem_channels=32, emb_dims=[192, 256, 320], key_dims=[16, 20, 24],
            depths=[3, 3, 3], num_heads=8, mlp_ratios=[2, 4, 6]),
    }

    def __init__(self,
                 arch='tiny',
                 in_channels: int = 3,
                 out_indices: Optional[Sequence[int]] = None,
                 drop_path_rate: float = 0.1,
                 attn_ratio: int = 2,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg=None):
        super().__init__(pretrained_to_init_cfg('SeaFormer', pretrained, init_cfg))
        arch = resolve_arch('SeaFormer', arch, self.arch_zoo)
        check_int('SeaFormer', 'in_channels', in_channels)
        check_number('SeaFormer', 'drop_path_rate', drop_path_rate, 0, 1)
        check_int('SeaFormer', 'attn_ratio', attn_ratio)
        self.arch = arch
        self.in_channels = in_channels
        self.norm_eval = norm_eval
        self.frozen_stages = frozen_stages
        num_sea = len(arch['depths'])
        num_mv2 = len(arch['mv2'])
        check_int('SeaFormer', 'frozen_stages', frozen_stages, minimum=-1, maximum=num_mv2)

        self.stem = conv_bn(in_channels, arch['stem_channels'], 3, 2, norm_cfg=norm_cfg)
        channels = arch['stem_channels']
        self.mv2_stages = nn.ModuleList()
        self.stage_channels = []
        for table in arch['mv2']:
            blocks = []
            for kernel, expand, out, stride in table:
                # mmpretrain's MobileNetV2 block, as the official one: [1x1 expand-BN-ReLU] ->
                # kxk depthwise-BN-ReLU -> 1x1-BN, residual when the shape is kept
                blocks.append(InvertedResidual(channels, out, int(round(channels * expand)),
                                               kernel, stride, norm_cfg=norm_cfg,
                                               act_cfg=dict(type='ReLU')))
                channels = out
            self.mv2_stages.append(nn.Sequential(*blocks))
            self.stage_channels.append(channels)

        # SeaFormer stages follow the last ``num_sea`` inverted-residual stages
        self.sea_start = num_mv2 - num_sea
        self.sea_stages = nn.ModuleList()
        for i in range(num_sea):
            dim = arch['emb_dims'][i]
            if dim != self.stage_channels[self.sea_start + i]:
                raise ValueError(f'SeaFormer: emb_dims[{i}]={dim} must equal the channels of '
                                 f'stage {self.sea_start + i} '
                                 f'({self.stage_channels[self.sea_start + i]}), the last '
                                 "inverted-residual stage's output that the block reads")
            dpr = torch.linspace(0, drop_path_rate, arch['depths'][i]).tolist()
            self.sea_stages.append(nn.Sequential(*[
                SeaFormerBlock(dim, arch['key_dims'][i], arch['num_heads'], arch['mlp_ratios'][i],
                               attn_ratio, dpr[j], norm_cfg) for j in range(arch['depths'][i])
            ]))

        # official outputs: the 1/8 map, then every SeaFormer stage
        self.output_stages = [1] + list(range(self.sea_start, num_mv2))
        self.all_out_channels = [self.stage_channels[i] for i in self.output_stages]
        num_outs = len(self.output_stages)
        if out_indices is None:
            out_indices = tuple(range(num_outs))
        out_indices = tuple(out_indices)
        bad = [i for i in out_indices if not -num_outs <= i < num_outs]
        if not out_indices or bad:
            raise ValueError(f'out_indices {out_indices} out of range: this SeaFormer has '
                             f'{num_outs} outputs (strides '
                             f'{[2 ** (i + 2) for i in self.output_stages]})')
        self.out_indices = tuple(sorted(i % num_outs for i in out_indices))
        self.out_channels = [self.all_out_channels[i] for i in self.out_indices]
        self._freeze_stages()

    def init_weights(self):
        if self.init_cfg is not None:
            return super().init_weights()
        # the official initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, (2.0 / fan_out)**0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'SeaFormer was built for {self.in_channels}-channel images, got '
                             f'shape {tuple(x.shape)}; set in_channels or fix the preprocessor')
        x = F.relu(self.stem(x))
        outs = []
        for i, stage in enumerate(self.mv2_stages):
            x = stage(x)
            if i >= self.sea_start:
                x = self.sea_stages[i - self.sea_start](x)
            if i in self.output_stages:
                outs.append(x)
        return tuple(outs[i] for i in self.out_indices)

    def _attention_modules(self):
        """``attention_maps(x)``: per SeaFormer block, in forward order, a pair (row weights
        (N, heads, H_i, H_i), column weights (N, heads, W_i, W_i)) of its squeezed axial
        attention; each query row sums to 1."""
        return [m for m in self.modules() if isinstance(m, SeaAttention)]

    def _frozen_parts(self):
        """The stem and the first ``frozen_stages`` stages (with their SeaFormer blocks)."""
        parts = [self.stem]
        for i in range(min(self.frozen_stages, len(self.mv2_stages))):
            parts.append(self.mv2_stages[i])
            if i >= self.sea_start:
                parts.append(self.sea_stages[i - self.sea_start])
        return parts

    def switch_to_deploy(self, channels_last: bool = True):
        """Inference mode (irreversible): fold every Conv-BN pair into one conv and, by default,
        store the conv weights channels-last, which lets oneDNN run the (mostly depthwise and
        1x1) convolutions without layout reorders. Outputs are unchanged up to float rounding;
        on 2 CPU cores this is 1.4-1.7x faster than eager mode
        (``benchmarks/reports/complexity.md``)."""
        return fold_conv_bn(self, channels_last)


# official name -> vt-mm name, applied in order to the key with its prefix removed
_KEY_RULES = [
    (r'^smb1\.stem_block\.0\.c\.', 'stem.conv.'),
    (r'^smb1\.stem_block\.0\.bn\.', 'stem.bn.'),
    (r'^smb(\d+)\.layer(\d+)\.', lambda m: f'mv2_stages.{int(m[1]) - 1}.{int(m[2]) - 1}.'),
    (r'^trans(\d+)\.transformer_blocks\.(\d+)\.',
     lambda m: f'sea_stages.{int(m[1]) - 1}.{m[2]}.'),
    (r'\.attn\.to_([qkv])\.', r'.attn.\1.'),
    (r'\.attn\.proj\.1\.', '.attn.out_proj.'),
    (r'\.attn\.proj_encode_row\.1\.', '.attn.row_proj.'),
    (r'\.attn\.proj_encode_column\.1\.', '.attn.col_proj.'),
    (r'\.attn\.pos_emb_row([qk])\.', r'.attn.row_pos_\1.'),
    (r'\.attn\.pos_emb_column([qk])\.', r'.attn.col_pos_\1.'),
    (r'\.attn\.dwconv\.', '.attn.detail_dw.'),
    (r'\.attn\.pwconv\.', '.attn.detail_pw.'),
    (r'\.c\.(weight|bias)$', r'.conv.\1'),
]


def _convert_backbone_key(key: str, with_expand: Dict[str, bool]) -> str:
    for pattern, repl in _KEY_RULES:
        key = re.sub(pattern, repl, key)
    # inverted residual (mmpretrain's): official conv.0/conv.2/conv.4 = expand/depthwise/linear,
    # or conv.0/conv.2 = depthwise/linear
    m = re.match(r'^(mv2_stages\.\d+\.\d+)\.conv\.(\d)\.(.*)$', key)
    if m:
        block, idx, rest = m[1], int(m[2]), m[3]
        names = ['expand_conv', 'depthwise_conv', 'linear_conv']
        names = names if with_expand[block] else names[1:]
        key = f'{block}.{names[idx // 2]}.{rest}'
    return key


def checkpoint_filter_fn(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Official SeaFormer backbone weights -> :class:`SeaFormer` keys (backbone-local, timm's
    contract: the result loads into ``SeaFormer(...)`` itself).

    Accepts the classification layout (backbone keys unprefixed + ``linear.*``, as in
    ``state_dict``/``state_dict_ema`` of the timm checkpoints) and the segmentation layout
    (``backbone.*`` + ``decode_head.*``); head keys are left out (see :func:`convert_head_keys`).
    The converter tool (tools/model_converters/seaformer2vtmm.py) adds the model prefixes.
    """
    # which inverted residuals have an expansion conv: those with a conv.4 entry
    bare = {(k[len('backbone.'):] if k.startswith('backbone.') else k): v
            for k, v in state_dict.items() if not k.startswith(('decode_head.', 'linear.'))}
    if any(k.startswith('decode_head.') for k in state_dict):
        stray = [k for k in state_dict if not k.startswith(('backbone.', 'decode_head.'))]
        if stray:
            raise KeyError(f'Unexpected key {stray[0]!r} in a SeaFormer segmentation checkpoint')
    blocks, expanded = set(), set()
    for key in bare:
        m = re.match(r'^smb(\d+)\.layer(\d+)\.conv\.(\d)\.', key)
        if m:
            block = f'mv2_stages.{int(m[1]) - 1}.{int(m[2]) - 1}'
            blocks.add(block)
            if m[3] == '4':
                expanded.add(block)
    with_expand = {block: block in expanded for block in blocks}
    return {_convert_backbone_key(k, with_expand): v for k, v in bare.items()}


def convert_head_keys(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The official heads' weights with vt-mm model keys: the segmentation ``decode_head.*``
    (LightHead) and the classifier ``linear.*`` (mmpretrain's ``head.fc.*``)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith('decode_head.'):
            out[_convert_head_key(key)] = value
        elif key.startswith('linear.'):
            out['head.fc.' + key[len('linear.'):]] = value
    return out


def _convert_head_key(key: str) -> str:
    key = re.sub(r'^decode_head\.fuse(\d+)\.',
                 lambda m: f'decode_head.fusions.{int(m[1]) - 1}.', key)
    key = key.replace('.local_embedding.', '.local_proj.').replace('.global_act.', '.global_proj.')
    key = key.replace('decode_head.linear_fuse.', 'decode_head.fuse_conv.')
    return key
