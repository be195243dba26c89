# VT-ResNet-101 (3 VT modules, see the VTResNet docstring), default recipe (see
# vt-resnet18_8xb32_in1k.py). Reported (Table 8, advanced recipe): 82.3 top-1, 41.5M params,
# 7.129 GFLOPs. Ours: 40.73M params, 7.218 GFLOPs.
_base_ = ['./vt-resnet18_8xb32_in1k.py']
model = dict(backbone=dict(depth=101))
