# VT-ResNet-18 with the paper's advanced recipe (Table 8, reported 76.8 top-1): RMSProp, batch 2048
# (8 GPUs x 256), lr warmed up from 0.01 to 0.16 over 5 epochs then multiplied by 0.9875 every
# epoch, 400 epochs, label smoothing, AutoAugment, stochastic depth (survival 0.9), dropout 0.2
# before the classifier, EMA of the weights with decay 0.99985 per iteration.
# Not stated in the paper, chosen as in the EfficientNet recipe it follows: RMSProp alpha 0.9,
# momentum 0.9, eps 1e-3 (TF-style, on the squared average), wd 4e-5 (the default recipe's).
_base_ = ['./vt-resnet18_8xb32_in1k.py']
model = dict(
    backbone=dict(drop_path_rate=0.1),
    head=dict(
        type='DropoutLinearClsHead',
        dropout_rate=0.2,
        loss=dict(_delete_=True, type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')))
bgr_mean = [103.53, 116.28, 123.675]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='AutoAugment', policies='imagenet',
         hparams=dict(pad_val=[round(x) for x in bgr_mean])),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=256, dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(
    optimizer=dict(
        _delete_=True, type='RMSprop', lr=0.16, alpha=0.9, momentum=0.9, eps=1e-3,
        weight_decay=4e-5))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01 / 0.16, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='ExponentialLR', gamma=0.9875, by_epoch=True, begin=5, end=400),
]
train_cfg = dict(by_epoch=True, max_epochs=400, val_interval=1)
# mmengine's EMA momentum is the weight of the new value: 1 - 0.99985
custom_hooks = [dict(type='EMAHook', momentum=1.5e-4, priority='ABOVE_NORMAL')
                ] + _base_.custom_hooks
auto_scale_lr = dict(base_batch_size=2048)
