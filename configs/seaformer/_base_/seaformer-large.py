# SeaFormer-L + LightHead (official settings; 150 classes by default).
_base_ = ['./seaformer-tiny.py']
model = dict(
    backbone=dict(arch='large'),
    decode_head=dict(
        in_channels=[128, 192, 256, 320],
        in_index=[0, 1, 2, 3],
        channels=192,
        embed_dims=[128, 160, 192]))
