# SeaFormer-Base on COCO-Stuff-10k (171 classes), 512x512 crops, 80k iterations,
# 8 GPUs x 4 images, AdamW lr 2e-4: the authors' recipe for this dataset
# (seaformer_base_512x512_80k_2x8_cocostuff10k.py).
# Same backbone and LightHead as the ADE20K config; only the class count differs.
_base_ = [
    './_base_/seaformer-base.py',
    'mmseg::_base_/datasets/coco-stuff10k.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedule_80k_adamw.py',
]
crop_size = (512, 512)
model = dict(data_preprocessor=dict(size=crop_size), decode_head=dict(num_classes=171))
train_dataloader = dict(batch_size=4)
