"""Shared by the export and deployment tests: a narrow Semantic FPN + VT-FPN config and BN with
trained-like statistics."""
import torch

SMALL_SEMANTIC_VTFPN = """
_base_ = [{base!r}]
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(pretrained=None, backbone=dict(depth=18, norm_cfg=norm_cfg),
             neck=dict(in_channels=[64, 128, 256, 512], out_channels=32, token_channels=64),
             decode_head=dict(in_channels=[32, 32, 32, 32], channels=32, norm_cfg=norm_cfg))
"""


def trained_like_bn(model, affine: bool = True):
    """BatchNorm with non-trivial statistics (and, with ``affine``, affine terms), so that an
    export that got BN wrong (e.g. in training mode, or dropped) cannot pass."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 0.4 + 0.8)
            if affine and m.affine:
                m.weight.data.copy_(torch.rand(n, generator=gen) * 0.4 + 0.8)
                m.bias.data.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
    return model
