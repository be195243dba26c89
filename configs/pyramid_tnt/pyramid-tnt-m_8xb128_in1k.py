# PyramidTNT-M, ImageNet-1k, 256x256. Reported: 83.5 top-1, 84.94M params, 8.20 GMACs.
_base_ = ['./pyramid-tnt-s_8xb128_in1k.py']
model = dict(backbone=dict(arch='medium', drop_path_rate=0.2), head=dict(in_channels=768))
