# SeaFormer-B + LightHead (official settings; 150 classes by default).
_base_ = ['./seaformer-tiny.py']
model = dict(
    backbone=dict(arch='base'),
    decode_head=dict(
        in_channels=[64, 192, 256], in_index=[0, 1, 2], channels=160, embed_dims=[128, 160]))
