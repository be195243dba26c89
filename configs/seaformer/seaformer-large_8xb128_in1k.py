# SeaFormer-Large ImageNet-1k classifier (14,046,504 params; reported 79.9 top-1); recipe as
# seaformer-tiny_8xb128_in1k.py.
_base_ = ['./seaformer-tiny_8xb128_in1k.py']
model = dict(backbone=dict(arch='large'), head=dict(in_channels=320))
