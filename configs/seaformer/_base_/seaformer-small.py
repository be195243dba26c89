# SeaFormer-S + LightHead (official settings; 150 classes by default).
_base_ = ['./seaformer-tiny.py']
model = dict(
    backbone=dict(arch='small'),
    decode_head=dict(
        in_channels=[48, 160, 192], in_index=[0, 1, 2], channels=128, embed_dims=[96, 128]))
