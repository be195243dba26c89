"""What the train and test tools need beyond mmengine's Runner, one job per module: configs
(:mod:`.config`), CPU distributed runs (:mod:`.distributed`), checkpoints (:mod:`.checkpoints`),
the checks before a run (:mod:`.preflight`, :mod:`.data_checks`), one run per work dir
(:mod:`.workdir_lock`), the reliability hooks every config declares (:mod:`.hooks`) and vt-mm's
models by name in the toolboxes' own APIs (:mod:`.model_names`)."""
from . import (  # noqa: F401
    checkpoints,
    config,
    data_checks,
    distributed,
    hooks,
    model_names,
    preflight,
    workdir_lock,
)

model_names.register_model_names()
