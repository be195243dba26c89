"""Deployment backends, one module per runtime, behind :class:`~.base.Backend`."""
from .base import Backend, BackendUnavailable, ConversionJob
from .mnn import MNNBackend
from .ncnn import NCNNBackend
from .onnxruntime import OnnxRuntimeBackend
from .openvino import OpenVINOBackend
from .tflite import TFLiteBackend

BACKENDS = {
    b.name: b
    for b in (OnnxRuntimeBackend, OpenVINOBackend, MNNBackend, NCNNBackend, TFLiteBackend)
}

__all__ = [
    'Backend', 'BackendUnavailable', 'ConversionJob', 'BACKENDS', 'get_backend', 'running_in'
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
