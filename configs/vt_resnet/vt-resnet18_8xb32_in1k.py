# VT-ResNet-18 on ImageNet-1k, the VT paper's default recipe (Wu et al., Table 2): SGD momentum
# 0.9, lr 0.1 divided by 10 every 30 epochs, wd 4e-5, batch 256 (8 GPUs x 32), 90 epochs.
# Reported: 72.0 top-1 (default recipe, Table 2), 76.8 (advanced recipe, Table 8).
# Ours: 11.58M params, 1.532 GFLOPs at 224 (Table 8: 11.7M, 1.569).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/vt_mm_runtime.py',
]
model = dict(
    type='ImageClassifier',
    # out_type='tokens': the backbone returns the final 16 visual tokens (N, 1024, 16)
    backbone=dict(type='VTResNet', depth=18, out_type='tokens'),
    # the head averages the tokens, then classifies
    neck=dict(type='GlobalAveragePooling', dim=1),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1024,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=4e-5))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=90, val_interval=1)
