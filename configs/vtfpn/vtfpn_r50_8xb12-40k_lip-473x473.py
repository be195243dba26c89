# Semantic FPN with VT-FPN (8 tokens x 1024 channels per level, 16 heads, one shared transformer),
# ResNet-50, on LIP at 473x473. VT paper Table 9 (reported: 47.39 mIoU, 26.4 GFLOPs, module 2.0).
# Identical to fpn_r50_8xb12-40k_lip-473x473.py but for the neck.
_base_ = ['./fpn_r50_8xb12-40k_lip-473x473.py']
model = dict(
    neck=dict(
        _delete_=True,
        type='VTFPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        num_outs=4,
        num_tokens=8,
        token_channels=1024))
