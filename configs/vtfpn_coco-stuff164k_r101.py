# Moved to configs/vtfpn/vtfpn_r101_8xb4-80k_coco-stuff164k-640x640.py.
# This path keeps working: it inherits everything from there.
_base_ = ['./vtfpn/vtfpn_r101_8xb4-80k_coco-stuff164k-640x640.py']
