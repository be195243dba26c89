"""SeaFormer's light segmentation head (Wan et al., ICLR 2023), for mmseg 1.x."""
from typing import List, Sequence

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.registry import MODELS
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from torch import Tensor

from ..folding import fold_conv_bn


class HardSigmoidFusion(nn.Module):
    """``local_proj(detail) * upsample(hard_sigmoid(global_proj(deep)))``.

    The hard-sigmoid is applied at the deep (low) resolution and then bilinearly upsampled
    (``align_corners=False``), in that order, as the official ``Fusion_block``.
    """

    def __init__(self, detail_channels, deep_channels, embed_dim, norm_cfg):
        super().__init__()
        self.local_proj = ConvModule(detail_channels, embed_dim, 1, norm_cfg=norm_cfg, act_cfg=None)
        self.global_proj = ConvModule(deep_channels, embed_dim, 1, norm_cfg=norm_cfg, act_cfg=None)

    def forward(self, detail: Tensor, deep: Tensor) -> Tensor:
        gate = F.interpolate(F.hardsigmoid(self.global_proj(deep)), size=detail.shape[2:],
                             mode='bilinear', align_corners=False)
        return self.local_proj(detail) * gate


@MODELS.register_module()
class LightHead(BaseDecodeHead):
    """SeaFormer light head: sequential hard-sigmoid fusion from the 1/8 map, then a (depthwise)
    1x1 conv-BN-ReLU, dropout and the 1x1 classifier; logits at 1/8.

    Args:
        embed_dims (Sequence[int]): Width after each fusion (T [64, 96], S [96, 128],
            B [128, 160], L [128, 160, 192]); the last equals ``channels``.
        is_dw (bool): Depthwise fuse conv, as all official configs. Default: True.
        **kwargs: :class:`BaseDecodeHead` arguments (``in_channels`` as a list, ``in_index``,
            ``channels``, ``num_classes``, ``dropout_ratio``, ``norm_cfg``, ``loss_decode``...).
    """

    def __init__(self, embed_dims: Sequence[int], is_dw: bool = True, **kwargs):
        kwargs.setdefault('input_transform', 'multiple_select')
        super().__init__(**kwargs)
        in_channels = self.in_channels
        if not isinstance(in_channels, (list, tuple)) or len(in_channels) != len(embed_dims) + 1:
            raise ValueError(f'LightHead needs one more input than embed_dims: in_channels='
                             f'{in_channels}, embed_dims={list(embed_dims)}')
        if embed_dims[-1] != self.channels:
            raise ValueError(f'embed_dims[-1]={embed_dims[-1]} must equal channels={self.channels}')
        self.embed_dims = list(embed_dims)
        self.fusions = nn.ModuleList(
            HardSigmoidFusion(in_channels[0] if i == 0 else embed_dims[i - 1], in_channels[i + 1],
                              embed_dims[i], self.norm_cfg) for i in range(len(embed_dims)))
        self.fuse_conv = ConvModule(self.channels, self.channels, 1,
                                    groups=self.channels if is_dw else 1, norm_cfg=self.norm_cfg,
                                    act_cfg=self.act_cfg)

    def forward(self, inputs: List[Tensor]) -> Tensor:
        feats = self._transform_inputs(inputs)
        x = feats[0]
        for fusion, deep in zip(self.fusions, feats[1:]):
            x = fusion(x, deep)
        return self.cls_seg(self.fuse_conv(x))

    def switch_to_deploy(self):
        """Fold the Conv-BN pairs into single convs for inference (see SeaFormer's). The head's
        convolutions are all 1x1, whose weights have one layout, so unlike the backbone's
        nothing is gained from storing them channels-last."""
        return fold_conv_bn(self)
