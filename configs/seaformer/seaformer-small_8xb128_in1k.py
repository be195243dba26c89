# SeaFormer-Small ImageNet-1k classifier (4,105,656 params; reported 73.4 top-1); recipe as
# seaformer-tiny_8xb128_in1k.py.
_base_ = ['./seaformer-tiny_8xb128_in1k.py']
model = dict(backbone=dict(arch='small'), head=dict(in_channels=192))
