# SeaFormer-Small on Pascal Context (60 classes with background), 480x480 crops, 80k iterations,
# 8 GPUs x 2 images, AdamW lr 2e-4: the authors' recipe for this dataset
# (seaformer_small_480x480_80k_2x8_pascalcontext.py).
# Same backbone and LightHead as the ADE20K config; only the class count differs.
# The authors' config for this one sets 2 images per GPU (batch 16); their other Pascal
# Context and COCO-Stuff-10k configs set 4 (batch 32), whatever the file names say (2x8).
_base_ = [
    './_base_/seaformer-small.py',
    'mmseg::_base_/datasets/pascal_context.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedule_80k_adamw.py',
]
crop_size = (480, 480)
model = dict(data_preprocessor=dict(size=crop_size), decode_head=dict(num_classes=60))
train_dataloader = dict(batch_size=2)
