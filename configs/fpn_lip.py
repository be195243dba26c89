# Moved to configs/vtfpn/fpn_r50_8xb12-40k_lip-473x473.py.
# This path keeps working: it inherits everything from there.
_base_ = ['./vtfpn/fpn_r50_8xb12-40k_lip-473x473.py']
