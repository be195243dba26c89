# SeaFormer-Tiny on Pascal Context (59 classes, background ignored), 480x480 crops, 80k iterations,
# 8 GPUs x 4 images, AdamW lr 2e-4: the authors' recipe for this dataset
# (seaformer_tiny_480x480_80k_2x8_pascalcontext_59.py).
# Same backbone and LightHead as the ADE20K config; only the class count differs.
_base_ = [
    './_base_/seaformer-tiny.py',
    'mmseg::_base_/datasets/pascal_context_59.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedule_80k_adamw.py',
]
crop_size = (480, 480)
model = dict(data_preprocessor=dict(size=crop_size), decode_head=dict(num_classes=59))
train_dataloader = dict(batch_size=4)
