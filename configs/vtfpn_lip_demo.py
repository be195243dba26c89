# Moved to configs/demo/vtfpn_r50_lip-demo-128x128.py.
# This path keeps working: it inherits everything from there.
_base_ = ['./demo/vtfpn_r50_lip-demo-128x128.py']
