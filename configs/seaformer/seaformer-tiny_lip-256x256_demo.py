# Moved to configs/demo/seaformer-tiny_lip-demo-256x256.py.
# This path keeps working: it inherits everything from there.
_base_ = ['../demo/seaformer-tiny_lip-demo-256x256.py']
