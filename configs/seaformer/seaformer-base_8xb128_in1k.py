# SeaFormer-Base ImageNet-1k classifier (8,742,664 params; reported 76.4 top-1); recipe as
# seaformer-tiny_8xb128_in1k.py.
_base_ = ['./seaformer-tiny_8xb128_in1k.py']
model = dict(backbone=dict(arch='base'), head=dict(in_channels=256))
