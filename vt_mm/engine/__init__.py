"""What the train and test tools need beyond mmengine's Runner, one job per module: configs
(:mod:`.config`), CPU distributed runs (:mod:`.distributed`), checkpoints (:mod:`.checkpoints`),
the checks before a run (:mod:`.preflight`, :mod:`.data_checks`), one run per work dir
(:mod:`.workdir_lock`) and the reliability hooks every config declares (:mod:`.hooks`)."""
from . import checkpoints, config, data_checks, distributed, hooks, preflight, workdir_lock  # noqa: F401,E501
