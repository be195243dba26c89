# Moved to configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py.
# This path keeps working: it inherits everything from there.
_base_ = ['./vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py']
