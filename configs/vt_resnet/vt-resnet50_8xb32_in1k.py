# VT-ResNet-50, default recipe (see vt-resnet18_8xb32_in1k.py). Reported (Table 8, advanced
# recipe): 80.6 top-1, 21.4M params, 3.412 GFLOPs. Ours: 21.74M params, 3.505 GFLOPs.
_base_ = ['./vt-resnet18_8xb32_in1k.py']
model = dict(backbone=dict(depth=50))
