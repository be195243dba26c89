# The authors' 80k recipe (Pascal Context, COCO-Stuff-10k): the 160k AdamW recipe
# (./schedule_160k_adamw.py, lr 2e-4 in their configs) over 80k iterations, checkpoints and
# evaluation every 4000 iterations as theirs.
_base_ = ['./schedule_160k_adamw.py']
optim_wrapper = dict(optimizer=dict(lr=0.0002))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=4000)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=80000),
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000))
