# Semantic FPN with VT-FPN, ResNet-50, on COCO-Stuff-164k. VT paper Table 10 (reported: 41.00
# mIoU, 113 GFLOPs, VT-FPN module 8.5 GFLOPs at 800x1216). Identical to fpn_r50_8xb4-80k_coco-
# stuff164k-640x640.py but for the neck.
_base_ = ['./fpn_r50_8xb4-80k_coco-stuff164k-640x640.py']
model = dict(
    neck=dict(
        _delete_=True,
        type='VTFPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        num_outs=4,
        num_tokens=8,
        token_channels=1024))
