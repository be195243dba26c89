from . import hooks, runtime  # noqa: F401
