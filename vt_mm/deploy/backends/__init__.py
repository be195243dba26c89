"""Deployment backends, one module per runtime, behind :class:`~.base.Backend`.

Every module of this package is imported here, so a new runtime is one new file whose
:class:`~.base.Backend` subclass is decorated with :func:`~.base.register_backend`
(docs/en/advanced_guides/add_a_backend.md).
"""
import importlib
import pkgutil

from .base import BACKENDS, PRECISIONS, Backend, BackendUnavailable, ConversionJob, register_backend

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != 'base':
        importlib.import_module(f'{__name__}.{_module}')

__all__ = [
    'Backend', 'BackendUnavailable', 'ConversionJob', 'BACKENDS', 'PRECISIONS', 'get_backend',
    'register_backend', 'running_in'
]


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (one of :data:`BACKENDS`), its packages checked."""
    if name not in BACKENDS:
        raise ValueError(f'unknown backend {name!r}; choose from {", ".join(BACKENDS)}')
    backend = BACKENDS[name]
    backend.check_available()
    return backend()


def running_in(precision: str, names):
    """(the backends of ``names`` that run ``precision`` here, {each other one that lists it
    in ``precisions``: why not here}); backends without it are left out silently."""
    ok, why_not = [], {}
    for name in names:
        try:
            BACKENDS[name].check_precision(precision)
            ok.append(name)
        except ValueError as e:
            if precision in BACKENDS[name].precisions:
                why_not[name] = str(e)
    return ok, why_not
