# The authors' SeaFormer recipe on mmseg 1.x: AdamW (wd 0.01), 160k iterations, 1500-iteration
# linear warm-up from 1e-6 then poly decay (power 1.0) to 0; head lr x10; no weight decay on the
# axial position embeddings and on BN. The learning rate is set per config (batch 32: 5e-4).
_base_ = ['mmseg::_base_/schedules/schedule_160k.py']
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0005, betas=(0.9, 0.999), weight_decay=0.01),
    # mmengine applies the longest matching key only, as mmcv 0.x did for the official configs
    paramwise_cfg=dict(
        custom_keys={
            'pos_embed': dict(decay_mult=0.0),
            'head': dict(lr_mult=10.0),
            'norm': dict(decay_mult=0.0),
            'bn': dict(decay_mult=0.0),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
