"""VT-FPN: a feature pyramid whose convolutions are replaced by visual tokens.

Wu et al., "Visual Transformers: Token-based Image Representation and Processing for Computer
Vision", https://arxiv.org/abs/2006.03677, Section 5 (Panoptic FPN semantic segmentation).
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import Tensor

from ..arg_checks import check_int, check_ints
from ..layers import (
    FilterTokenizer,
    PointwiseConv2d,
    TokenPositionEncoding,
    TokenProjector,
    TokenTransformer,
    set_fast_paths,
    tracing,
)
from ..layers.visual_tokens import pointwise

# Default token width as a multiple of out_channels (the paper: 1024 token channels over 256).
TOKEN_WIDTH_RATIO = 4
# output_convs: local convolutions after the token projection (None: the paper's design)
OUTPUT_CONVS = (None, 'conv3x3', 'dwsep3x3')


def _nearest_repeat(size: int, out_size: int) -> int:
    """k when ``out_size = k * size``, else 0: then ``F.interpolate(mode='nearest')`` from
    ``size`` to ``out_size`` reads input pixel ``i // k`` for output pixel ``i``, a broadcast.

    PyTorch computes the source pixel as ``floor(i * (size / out_size))`` in float32; for
    integer factors that is ``i // k`` exactly (checked against F.interpolate for every size up
    to 160 and factor up to 8 in tests/test_models/test_necks/test_vt_fpn.py, and for float32
    arithmetic for sizes below 600 and factors below 40), so no float check is needed here.
    Plain Python ints: it runs only in eager mode (see :meth:`VTFPN._upsample`), never under
    Dynamo.
    """
    return out_size // size if out_size % size == 0 else 0


def _plain_1x1(module: ConvModule) -> bool:
    """A ``ConvModule`` whose convolution is a plain 1x1 ``nn.Conv2d`` (a matrix product)."""
    conv = module.conv
    return (type(conv) in (nn.Conv2d, PointwiseConv2d) and conv.kernel_size == (1, 1)
            and conv.stride == (1, 1) and conv.padding == (0, 0) and conv.dilation == (1, 1)
            and conv.groups == 1 and tuple(module.order) == ('conv', 'norm', 'act')
            and not module.with_spectral_norm)


@MODELS.register_module()
class VTFPN(BaseModule):
    """VT-FPN neck.

    From every pyramid level, ``num_tokens`` visual tokens of ``token_channels`` channels are
    extracted with a filter-based tokenizer (plus position encoding); the tokens of all levels are
    concatenated and go through one shared token transformer, so tokens of different resolutions
    interact; each level's output tokens are projected back onto that level's map. The outputs
    are ``out_channels``-wide maps at the input strides, what mmseg's ``FPNHead`` or an mmdet
    head consumes, so VT-FPN is a drop-in replacement for ``FPN``.

    What is kept from FPN and what is replaced (the paper says only "replace the convolutions in
    FPN with VT modules"; this is vt-mm's decision, tested by the FLOP count): kept are the 1x1
    lateral convolutions (the semantic head needs every level at the same width) and the
    parameter-free top-down pathway; replaced are the 3x3 output convolutions, ~87% of FPN's
    FLOPs (ResNet-50 at 473x473: FPN 12.9 GMACs, this neck 2.0, as in the paper).

    Where the main text is silent, the defaults follow the paper's appendix pseudo-code: 16 heads
    in the transformer and the projectors; 16 groups for the pixel-side projections (the
    tokenizer's value projection and the projector's query, grouped as the heads so that
    ``X (W_Q K^T)`` still folds per head); a transformer with a value projection, key/query width
    C_T/2 and K/Q/V grouped by 8 (or the largest common divisor of 8, C_T and C_T/2);
    ``token_channels`` = 4 x ``out_channels`` (the paper's 1024 at
    256). Why: the main text's literal reading (one head, dense projections) does not train like
    FPN; the evidence is in docs/en/advanced_guides/design_notes.md.

    The forward has exact fast paths (laterals as matrix products with the top-down sum
    accumulated in place, integer-factor nearest upsampling as a broadcast copy, projectors that
    add in place without autograd); ``fast_paths=False`` (or
    :func:`~vt_mm.models.layers.set_fast_paths`) runs the reference forward, FPN's and the layers'
    plain steps, against which the fast paths are tested.

    Extra levels (``num_outs`` > number of used inputs) follow mmdet's FPN exactly: max-pooling
    when ``add_extra_convs=False``, otherwise stride-2 3x3 convs on the input
    (``'on_input'``, RetinaNet's P6/P7), on the lateral or on the output.

    Args:
        in_channels (Sequence[int]): Channels of each backbone output.
        out_channels (int): Channels of every output map.
        num_outs (int): Number of output maps.
        start_level (int): First backbone level used. Default: 0.
        end_level (int): Last backbone level used (exclusive); -1 means the last. Default: -1.
        add_extra_convs (bool | str): False, True (= 'on_input'), 'on_input', 'on_lateral' or
            'on_output'. Default: False.
        relu_before_extra_convs (bool): ReLU before the 2nd and later extra convs. Default: False.
        num_tokens (int): Tokens per level L. Default: 8.
        token_channels (int, optional): Token channels C_T. Default: None (4 x out_channels).
        num_heads (int, optional): Heads of transformer and projector attention. Default: None
            (16, or the largest common divisor of 16, out_channels, token_channels and
            token_channels // 2, the transformer's key width).
        groups (int, optional): Groups of the tokenizer value projections and the projector
            queries. Default: None (as num_heads).
        num_transformer_layers (int): Stacked shared token transformers. Default: 1.
        with_pos_encoding (bool): Attention-based token position encoding. Default: True.
        transformer_cfg (dict, optional): Extra :class:`TokenTransformer` arguments.
        tokenizer_cfg (dict, optional): Extra :class:`FilterTokenizer` arguments, e.g.
            ``dict(scale_logits=False)``.
        no_norm_on_lateral (bool): No norm on the lateral convs. Default: False.
        conv_cfg (dict, optional): Conv config of lateral and extra convs.
        norm_cfg (dict, optional): Norm config of lateral and extra convs.
        act_cfg (dict, optional): Activation config of lateral and extra convs.
        upsample_cfg (dict): ``F.interpolate`` arguments of the top-down pathway.
            Default: dict(mode='nearest').
        zero_init_projection (bool): Start the projectors' token values at zero, so that the
            untrained neck is FPN's laterals and top-down sum (as mmcv's ``NonLocal2d`` does with
            its output). Default: False (it did not change the trained results).
        output_convs (str, optional): Buys back the local capacity of FPN's 3x3 output
            convolutions at a known FLOP cost (a departure from the paper): ``'conv3x3'`` is
            FPN's own output conv (``ConvModule`` 3x3 with ``conv_cfg`` / ``norm_cfg`` /
            ``act_cfg``), ``'dwsep3x3'`` a depthwise-separable one (mmcv's
            ``DepthwiseSeparableConvModule``, ~8x fewer FLOPs at 256 channels), applied to each
            level's output after the token projection, before the extra levels. The depthwise
            conv is drawn from Xavier-uniform with its true fans (9 in, 9 out), not torch's
            (9 in, 9C out, which would shrink the outputs 11x at initialisation).
            Default: None (the paper: no 3x3 convolutions).
        output_conv_levels (Sequence[int], optional): Which backbone levels (indices into
            ``in_channels``, as ``start_level`` / ``end_level``) get ``output_convs``; e.g.
            ``(2, 3)`` keeps 3x3 convs on ResNet's stride-16 and stride-32 levels only, where
            they cost 1/16 + 1/64 of the stride-4 level's. Backbone indices (not positions
            among the used levels) so that one setting means the same levels in Semantic FPN
            (``start_level=0``) and RetinaNet (``start_level=1``). Each must lie in
            ``[start_level, end of the used levels)``. Default: None (every used level).
        fast_paths (bool): The exact fast paths of the neck and its layers; False runs the
            reference forward, in which every declared layer is called as a module (forward
            hooks on the laterals and the projectors' queries). Default: True.
        init_cfg (dict | list[dict], optional): Initialisation config.

    Example:
        >>> import torch
        >>> from vt_mm.models.necks import VTFPN
        >>> neck = VTFPN(in_channels=[64, 128], out_channels=32, num_outs=2)
        >>> feats = [torch.rand(1, 64, 16, 16), torch.rand(1, 128, 8, 8)]
        >>> [tuple(out.shape) for out in neck(feats)]
        [(1, 32, 16, 16), (1, 32, 8, 8)]
    """

    fast_paths = True

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: int,
                 num_outs: int,
                 start_level: int = 0,
                 end_level: int = -1,
                 add_extra_convs: Union[bool, str] = False,
                 relu_before_extra_convs: bool = False,
                 num_tokens: int = 8,
                 token_channels: Optional[int] = None,
                 num_heads: Optional[int] = None,
                 groups: Optional[int] = None,
                 num_transformer_layers: int = 1,
                 with_pos_encoding: bool = True,
                 transformer_cfg: Optional[dict] = None,
                 tokenizer_cfg: Optional[dict] = None,
                 no_norm_on_lateral: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 upsample_cfg: dict = dict(mode='nearest'),
                 zero_init_projection: bool = False,
                 output_convs: Optional[str] = None,
                 output_conv_levels: Optional[Sequence[int]] = None,
                 fast_paths: bool = True,
                 init_cfg=dict(type='Xavier', layer=['Conv2d', 'Conv1d'], distribution='uniform')):
        super().__init__(init_cfg)
        if not isinstance(in_channels, (list, tuple)) or not in_channels:
            raise ValueError(f'in_channels must be a non-empty list of ints, got {in_channels!r}')
        check_ints('VTFPN', 'in_channels', in_channels)
        check_int('VTFPN', 'out_channels', out_channels)
        check_int('VTFPN', 'num_outs', num_outs)
        check_int('VTFPN', 'start_level', start_level, minimum=0)
        check_int('VTFPN', 'end_level', end_level, minimum=-1)
        check_int('VTFPN', 'num_tokens', num_tokens)
        check_int('VTFPN', 'token_channels', token_channels, allow_none=True)
        check_int('VTFPN', 'num_heads', num_heads, allow_none=True)
        check_int('VTFPN', 'groups', groups, allow_none=True)
        # 0 layers: tokens go from the tokenizer to the projector unmixed
        check_int('VTFPN', 'num_transformer_layers', num_transformer_layers, minimum=0)
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_ins = len(in_channels)
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = dict(upsample_cfg)
        self.zero_init_projection = zero_init_projection

        if end_level == -1 or end_level == self.num_ins - 1:
            self.backbone_end_level = self.num_ins
            if num_outs < self.num_ins - start_level:
                raise ValueError(f'num_outs={num_outs} is smaller than the '
                                 f'{self.num_ins - start_level} '
                                 f'levels used (in_channels={self.in_channels}, '
                                 f'start_level={start_level})')
        else:
            self.backbone_end_level = end_level + 1
            if end_level >= self.num_ins or num_outs != end_level - start_level + 1:
                raise ValueError(f'end_level={end_level} does not fit '
                                 f'in_channels={self.in_channels} '
                                 f'and num_outs={num_outs}')
        if not 0 <= start_level < self.backbone_end_level:
            raise ValueError(f'start_level={start_level} is out of range for '
                             f'{self.num_ins} inputs')
        self.start_level = start_level
        self.end_level = end_level

        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs not in (False, 'on_input', 'on_lateral', 'on_output'):
            raise ValueError("add_extra_convs must be False, True, 'on_input', 'on_lateral' or "
                             f"'on_output', got {add_extra_convs!r}")
        self.add_extra_convs = add_extra_convs

        num_levels = self.backbone_end_level - start_level
        self.lateral_convs = nn.ModuleList([
            ConvModule(
                self.in_channels[i],
                out_channels,
                1,
                # a plain 1x1 conv runs as a matrix product (same parameters and result)
                conv_cfg=dict(type=PointwiseConv2d) if conv_cfg is None else conv_cfg,
                norm_cfg=norm_cfg if not no_norm_on_lateral else None,
                act_cfg=act_cfg,
                inplace=False) for i in range(start_level, self.backbone_end_level)
        ])
        if token_channels is None:
            token_channels = TOKEN_WIDTH_RATIO * out_channels
        # None: the pseudo-code's 16, or the largest divisor of both widths and of the
        # transformer's key width C_T/2 below it (narrow necks)
        fit = math.gcd(16, out_channels, token_channels, token_channels // 2)
        num_heads = fit if num_heads is None else num_heads
        groups = fit if groups is None else groups
        for what, value in (('out_channels', out_channels), ('token_channels', token_channels)):
            for arg, div in (('num_heads', num_heads), ('groups', groups)):
                if div < 1 or value % div:
                    raise ValueError(f'VTFPN: {arg}={div} must divide {what}={value}; choose '
                                     f'{arg} among the divisors of {what} (e.g. 8 or 16 for '
                                     'widths that are multiples of 16)')
        self.token_channels = token_channels
        # plain 1x1 laterals (no norm / activation): the top-down sum is accumulated in place
        self._fused_laterals = all(
            _plain_1x1(conv) and not conv.with_norm and not conv.with_activation
            for conv in self.lateral_convs)
        self.tokenizers = nn.ModuleList([
            FilterTokenizer(out_channels, token_channels, num_tokens, value_groups=groups,
                            **(tokenizer_cfg or {})) for _ in range(num_levels)
        ])
        self.pos_encodings = nn.ModuleList([
            TokenPositionEncoding(token_channels) for _ in range(num_levels)
        ]) if with_pos_encoding else None
        transformer_cfg = dict(
            # K/Q/V groups divide both the key width and C_T (which the key and value read)
            dict(qk_channels=token_channels // 2,
                 qkv_groups=math.gcd(8, token_channels, token_channels // 2),
                 with_value=True),
            **(transformer_cfg or {}))
        self.transformer = nn.Sequential(*[
            TokenTransformer(token_channels, num_heads=num_heads, **transformer_cfg)
            for _ in range(num_transformer_layers)
        ])
        self.projectors = nn.ModuleList([
            TokenProjector(out_channels, token_channels, num_heads=num_heads, query_groups=groups)
            for _ in range(num_levels)
        ])

        self.extra_convs = nn.ModuleList()
        num_extra = num_outs - num_levels
        if add_extra_convs:
            for i in range(num_extra):  # none when num_outs <= the levels used
                if i == 0 and add_extra_convs == 'on_input':
                    extra_in = self.in_channels[self.backbone_end_level - 1]
                else:
                    extra_in = out_channels
                self.extra_convs.append(
                    ConvModule(
                        extra_in,
                        out_channels,
                        3,
                        stride=2,
                        padding=1,
                        conv_cfg=conv_cfg,
                        norm_cfg=norm_cfg,
                        act_cfg=act_cfg,
                        inplace=False))

        if output_convs not in OUTPUT_CONVS:
            raise ValueError(f'VTFPN: output_convs must be one of {OUTPUT_CONVS}, got '
                             f'{output_convs!r}')
        used = range(start_level, self.backbone_end_level)  # backbone levels, as laterals
        if output_conv_levels is not None:
            if output_convs is None:
                raise ValueError(f'VTFPN: output_conv_levels={output_conv_levels!r} needs '
                                 "output_convs ('conv3x3' or 'dwsep3x3')")
            levels = list(output_conv_levels)
            check_ints('VTFPN', 'output_conv_levels', levels, minimum=0)
            if not levels or len(set(levels)) != len(levels) or not set(levels) <= set(used):
                raise ValueError(
                    f'VTFPN: output_conv_levels={output_conv_levels!r} must be distinct '
                    f'backbone levels in [{used.start}, {used.stop}) (the levels used: '
                    f'start_level={start_level} to {used.stop - 1}; indices into in_channels)')
        else:
            levels = list(used)
        self.output_conv_levels = tuple(sorted(levels)) if output_convs else ()
        self.output_convs = None
        if output_convs:
            def output_conv():
                if output_convs == 'conv3x3':
                    return ConvModule(out_channels, out_channels, 3, padding=1, conv_cfg=conv_cfg,
                                      norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False)
                return DepthwiseSeparableConvModule(out_channels, out_channels, 3, padding=1,
                                                    conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                                                    act_cfg=act_cfg)
            # Identity on the levels without one: one module list, entry i = used level i
            # (backbone level start_level + i), as lateral_convs
            self.output_convs = nn.ModuleList([
                output_conv() if i in self.output_conv_levels else nn.Identity() for i in used
            ])
        set_fast_paths(self, fast_paths)

    def init_weights(self) -> None:
        super().init_weights()
        if self.output_convs is not None and self._init_is_xavier():
            for conv in self.output_convs:
                if isinstance(conv, DepthwiseSeparableConvModule):
                    # torch's Xavier fans ignore groups: a depthwise 3x3 over C channels gets
                    # fan_out 9C and a gain of ~0.09, so the outputs started 11x smaller than
                    # the paper's (RetinaNet / Mask R-CNN then trailed). Xavier with the true
                    # fans (9 in, 9 out) keeps the scale, as FPN's 3x3 conv does; the bias
                    # stays as the Xavier init left it.
                    weight = conv.depthwise_conv.conv.weight
                    bound = math.sqrt(3 / weight[0].numel())  # sqrt(6 / (fan_in + fan_out))
                    nn.init.uniform_(weight, -bound, bound)
        if self.zero_init_projection:
            # the projectors' token values start at zero: the neck starts as FPN's laterals and
            # top-down sum (mmcv's NonLocal2d zero-initialises its residual output the same way)
            for proj in self.projectors:
                nn.init.zeros_(proj.value.weight)
                nn.init.zeros_(proj.value.bias)

    def _init_is_xavier(self) -> bool:
        """Whether the convs were drawn by the default Xavier init (not loaded weights)."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        return any(isinstance(c, dict) and c.get('type') == 'Xavier' for c in cfgs)

    def _check_inputs(self, inputs: Sequence[Tensor]) -> None:
        if len(inputs) != self.num_ins:
            raise ValueError(f'VTFPN was built for {self.num_ins} inputs (in_channels='
                             f'{self.in_channels}) but got {len(inputs)} feature maps; check the '
                             "backbone's out_indices")
        actual = [int(x.shape[1]) for x in inputs]
        if actual != self.in_channels:
            raise ValueError(f'VTFPN in_channels mismatch: expected {self.in_channels}, got '
                             f'feature maps with {actual} channels; set '
                             f'neck.in_channels={actual}')

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """FPN's laterals and top-down sum -> tokens of every level -> one shared transformer ->
        each level's projector (-> output convs) -> extra levels as mmdet's FPN."""
        laterals = self.lateral_features(inputs)
        tokens, _ = self.tokenize(laterals)
        mixed = self.mix_tokens(tokens)
        # fast paths, no autograd: the laterals are not read after projection (the last one is,
        # by 'on_lateral' extra convs), so the projectors may add onto them in place
        keep_last = self.add_extra_convs == 'on_lateral'
        outs = [
            proj(x, t, inplace=not (keep_last and i == len(laterals) - 1))
            for i, (proj, x, t) in enumerate(zip(self.projectors, laterals, mixed))
        ]
        if self.output_convs is not None:
            outs = [conv(x) for conv, x in zip(self.output_convs, outs)]
        return tuple(outs) + self._extra_levels(inputs, laterals, outs)

    def lateral_features(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        """1x1 laterals plus FPN's top-down pathway: the maps the tokenizers read."""
        self._check_inputs(inputs)
        inputs = inputs[self.start_level:self.backbone_end_level]
        if self.fast_paths and self._fused_laterals and not tracing():
            return self._fused_lateral_features(inputs)
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._upsample(laterals[i], laterals[i - 1])
        return laterals

    def tokenize(self, laterals: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Tokens (N, C_T, L) and spatial attention maps (N, L, H, W) of every used level."""
        tokens, attns = [], []
        for i, x in enumerate(laterals):
            t, a = self.tokenizers[i](x)
            if self.pos_encodings is not None:
                t = self.pos_encodings[i](t, a)
            tokens.append(t)
            attns.append(a)
        return tokens, attns

    def mix_tokens(self, tokens: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """The tokens of all levels through the one shared transformer, split back by level."""
        mixed = self.transformer(torch.cat(tokens, dim=2))
        return mixed.split([t.shape[2] for t in tokens], dim=2)

    def attention_maps(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        """Spatial attention (N, L, H_i, W_i) of every level's tokenizer: which pixels each
        visual token gathers."""
        return self.tokenize(self.lateral_features(inputs))[1]

    def _extra_levels(self, inputs: Sequence[Tensor], laterals: Sequence[Tensor],
                      outs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """The levels beyond the backbone's, as mmdet's FPN makes them."""
        extra: List[Tensor] = []
        num_extra = self.num_outs - len(outs)
        if num_extra <= 0:
            return ()
        if not self.add_extra_convs:
            last = outs[-1]
            for _ in range(num_extra):
                last = F.max_pool2d(last, 1, stride=2)
                extra.append(last)
            return tuple(extra)
        if self.add_extra_convs == 'on_input':
            source = inputs[self.backbone_end_level - 1]
        elif self.add_extra_convs == 'on_lateral':
            source = laterals[-1]
        else:
            source = outs[-1]
        extra.append(self.extra_convs[0](source))
        for conv in self.extra_convs[1:]:
            extra.append(conv(F.relu(extra[-1]) if self.relu_before_extra_convs else extra[-1]))
        return tuple(extra)

    def _fused_lateral_features(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        """Fast path of the laterals (plain 1x1 convs without norm or activation): ``W x + b +
        up(coarser)`` is computed as ``up(coarser + b)`` accumulated in place by the product
        ``W x``. Interpolation preserves a constant, so this is FPN's sum; it saves the bias and
        the sum passes over the large maps (the neck is memory-bound)."""
        laterals = [pointwise(self.lateral_convs[-1].conv, inputs[-1])]
        for conv, x in zip(reversed(self.lateral_convs[:-1]), reversed(inputs[:-1])):
            coarse = laterals[0]
            if conv.conv.bias is not None:
                coarse = coarse + conv.conv.bias.view(1, -1, 1, 1)
            out = self._upsample(coarse, x).contiguous()
            n, c = out.shape[:2]
            out.view(n, c, -1).baddbmm_(
                conv.conv.weight.view(1, c, -1).expand(n, -1, -1), x.reshape(n, x.shape[1], -1))
            laterals.insert(0, out)
        return laterals

    def _upsample(self, coarse: Tensor, fine: Tensor) -> Tensor:
        """The top-down pathway's upsampling of ``coarse`` to the level of ``fine``."""
        (h, w), (fh, fw) = coarse.shape[2:], fine.shape[2:]
        if 'scale_factor' in self.upsample_cfg:
            up = F.interpolate(coarse, **self.upsample_cfg)
        elif (self.fast_paths and self.upsample_cfg == dict(mode='nearest') and not tracing()
              and not torch.compiler.is_compiling()
              and _nearest_repeat(h, fh) and _nearest_repeat(w, fw)):
            # fast path: nearest upsampling by an integer factor is a broadcast copy, identical
            # to F.interpolate and on the CPU several times faster than its kernel for some
            # sizes (30x30 -> 60x60, 256 channels: 3.4 vs 0.4 ms). Not while compiling: the size
            # test is data-dependent for Dynamo (a graph break), and Inductor generates its own
            # kernel for the interpolation.
            n, c = coarse.shape[:2]
            up = coarse[:, :, :, None, :, None].expand(n, c, h, fh // h, w, fw // w)
            up = up.reshape(n, c, fh, fw)
        else:
            up = F.interpolate(coarse, size=fine.shape[2:], **self.upsample_cfg)
        if up.shape[2:] != fine.shape[2:]:
            raise ValueError(f'VTFPN: the top-down pathway upsampled a {tuple(coarse.shape[2:])} '
                             f'map to {tuple(up.shape[2:])}, but the finer level is '
                             f'{tuple(fine.shape[2:])}; with upsample_cfg={self.upsample_cfg} the '
                             'input size must be divisible by the largest stride')
        return up
