# PyramidTNT-B, ImageNet-1k, 256x256. Reported: 84.1 top-1, 156.99M params, 15.97 GMACs.
_base_ = ['./pyramid-tnt-s_8xb128_in1k.py']
model = dict(backbone=dict(arch='base', drop_path_rate=0.3), head=dict(in_channels=1024))
