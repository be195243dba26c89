# What every vt-mm config inherits, next to its toolbox's own default_runtime.py: the import that
# registers vt-mm's modules and its reliability hooks. Declared here rather than added by
# tools/train.py, so a config run by mmseg's, mmdet's or mmpretrain's own tools/train.py (or
# `mim train`) behaves the same. A config that sets its own custom_hooks keeps these with
# `custom_hooks = _base_.custom_hooks + [...]`; listing fewer opts out of one.
custom_imports = dict(imports=['vt_mm'], allow_failed_imports=False)
custom_hooks = [
    # checkpoints carry the Python/NumPy/torch RNG states and the sampler position, so a resumed
    # run continues exactly as the uninterrupted one would
    dict(type='ResumeRNGHook'),
    # a NaN/inf loss stops training at that iteration with a message, instead of running on
    dict(type='NonFiniteLossHook'),
    # distributed runs: every rank starts from the same parameters and sees the same iteration
    dict(type='RankConsistencyHook'),
    # checkpoints written atomically (a kill mid-save loses nothing), never with NaN/Inf
    # weights, old ones removed only after the new one is complete; --resume takes the newest
    # checkpoint that loads (vt_mm/engine/checkpoints/)
    dict(type='CheckpointSafetyHook'),
    # compile=True compiles the networks (backbone, neck, heads) instead of mmengine's whole train
    # step, which Dynamo recompiles at every iteration (vt_mm/engine/hooks.py)
    dict(type='NetworkCompileHook'),
]
