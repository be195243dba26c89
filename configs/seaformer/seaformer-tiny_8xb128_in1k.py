# SeaFormer-T ImageNet-1k classifier, the official classification model: backbone, global average
# pooling of the last (1/64) map, linear (1,781,096 params; reported 68.1 top-1). The authors train
# with timm's script; this config uses mmpretrain's AdamW/cosine recipe at 224 with batch 1024
# (8 GPUs x 128). Converted official weights: tools/model_converters/seaformer2vtmm.py.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/vt_mm_runtime.py',
]
model = dict(
    type='ImageClassifier',
    backbone=dict(type='SeaFormer', arch='tiny', out_indices=(-1, ), drop_path_rate=0.1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=160,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)))
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.0)}))
