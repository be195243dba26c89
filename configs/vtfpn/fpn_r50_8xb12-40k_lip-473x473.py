# Semantic FPN (Panoptic FPN's semantic branch), ResNet-50, FPN neck, on LIP at 473x473.
# The baseline of the VT paper's Table 9 (reported: 47.04 mIoU, 37.1 GFLOPs, FPN module 12.8).
# Training as in the paper: batch 96 (8 GPUs x 12), SGD lr 0.01, wd 5e-4, SyncBN. The paper does
# not state the schedule length: 40k iterations (~126 epochs), poly decay.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    '../_base_/datasets/lip.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
    '../_base_/vt_mm_runtime.py',
]
crop_size = (473, 473)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=20),
)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
# tools/test.py --tta: original + flipped view, left/right channels of the flipped one swapped
tta_model = dict(type='FlipSwapSegTTAModel', swap_pairs=[[14, 15], [16, 17], [18, 19]])
