# Moved to configs/vtfpn/fpn_r101_8xb4-80k_coco-stuff164k-640x640.py.
# This path keeps working: it inherits everything from there.
_base_ = ['./vtfpn/fpn_r101_8xb4-80k_coco-stuff164k-640x640.py']
