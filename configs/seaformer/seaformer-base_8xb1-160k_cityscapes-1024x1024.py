# SeaFormer-Base on Cityscapes at full resolution (2048x1024 input, 1024x1024 crops), 160k
# iterations, batch 8 (8 GPUs x 1), AdamW lr 3e-4, as the authors' 1x8 config. Reported: 77.7 mIoU.
_base_ = [
    './_base_/seaformer-base.py',
    'mmseg::_base_/datasets/cityscapes_1024x1024.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedule_160k_adamw.py',
]
crop_size = (1024, 1024)
model = dict(data_preprocessor=dict(size=crop_size), decode_head=dict(num_classes=19))
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(optimizer=dict(lr=0.0003))
