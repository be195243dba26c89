from . import checkpoints, data_checks, hooks, runtime  # noqa: F401  (registers hooks, backend)
