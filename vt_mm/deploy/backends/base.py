"""The interface every deployment backend implements (one module per runtime).

A backend converts the static ONNX graph that :func:`vt_mm.deploy.export_onnx` writes (or, where
its converter starts from PyTorch, the same network) into its runtime's files, and loads those
files into a callable that maps the normalised NCHW image (numpy float32, batch 1) to the
graph's outputs as numpy arrays in the ONNX layout. Adding a runtime is one module in
``vt_mm/deploy/backends/`` with one :class:`Backend` subclass decorated with
:func:`register_backend` (the package imports every module there; a runtime kept outside vt-mm
registers the same way when its module is imported).
"""
import contextlib
import importlib
import io
import os
import os.path as osp
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch.nn as nn

__all__ = ['Backend', 'ConversionJob', 'BackendUnavailable', 'quiet_stdout', 'register_backend',
           'BACKENDS', 'PRECISIONS']

# the arithmetic a deployed graph can run in: fp32; int8 (a statically quantized graph, made
# from calibration inputs at conversion); bf16 (the fp32 files run in bf16 by the runtime)
PRECISIONS = ('fp32', 'int8', 'bf16')
# name -> Backend subclass, in the order they register (module names, alphabetical)
BACKENDS: Dict[str, type] = {}


def register_backend(name: str):
    """Class decorator: registers a :class:`Backend` subclass as ``--backend name``.

    Example:
        >>> @register_backend('myruntime')
        ... class MyRuntimeBackend(Backend):
        ...     packages = ('myruntime', )
        ...     precisions = ('fp32', 'int8')
    """
    def register(cls):
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise TypeError(f'register_backend({name!r}) decorates a Backend subclass, not {cls!r}')
        where = f'{cls.__module__}.{cls.__qualname__}'
        if name in BACKENDS:  # a module imported again replaces its own class
            before = BACKENDS[name]
            if f'{before.__module__}.{before.__qualname__}' != where:
                raise ValueError(f'backend {name!r} is registered twice: {before.__module__}.'
                                 f'{before.__qualname__} and {where}')
        unknown = [p for p in cls.precisions if p not in PRECISIONS]
        if 'fp32' not in cls.precisions or unknown:
            raise ValueError(f'backend {name!r}: precisions {tuple(cls.precisions)} must include '
                             f"'fp32' and only name {PRECISIONS}")
        cls.name = name
        BACKENDS[name] = cls
        return cls
    return register


@contextlib.contextmanager
def quiet_stdout():
    """Converters' progress output off stdout (the tools print their results there): Python
    prints (litert-torch's progress bars) and C stdio (MNN's converter notices). Errors still
    raise; their messages are in the exceptions."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, 'w') as devnull, contextlib.redirect_stdout(io.StringIO()):
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


class BackendUnavailable(RuntimeError):
    """The backend's Python packages are not installed."""


@dataclass
class ConversionJob:
    """What a backend converts.

    Attributes:
        onnx_path: the static-shape, folded fp32 ONNX graph (input ``input``).
        net: the PyTorch network that graph was exported from (eval mode).
        example: an input of the graph's shape (numpy float32, N x 3 x H x W).
        output_names: the graph's output names, in order.
        output_shapes: the outputs' shapes (runtimes that drop the batch axis are reshaped).
        out_dir: where the backend writes its files.
        stem: the files' base name.
        calibration: INT8 calibration inputs (each like ``example``): given exactly when
            ``precision`` is ``'int8'``.
        integer_outputs: whether the outputs are labels that the caller expects as int32.
        expected: PyTorch's outputs on ``example`` (what the backend is compared with).
        shared_files: files made from ``onnx_path`` that several backends convert from, by
            kind (``'qdq'``: the INT8 graph onnxruntime and OpenVINO both run), made once per
            job.
        precision: one of :data:`PRECISIONS` the backend lists in :attr:`Backend.precisions`:
            ``'int8'`` makes ``convert`` write a quantized graph; ``'bf16'`` changes only how
            ``load`` compiles the fp32 files.
    """
    onnx_path: str
    net: nn.Module
    example: np.ndarray
    output_names: List[str]
    output_shapes: List[tuple]
    out_dir: str
    stem: str
    calibration: Optional[Sequence[np.ndarray]] = None
    integer_outputs: bool = False
    expected: Optional[List[np.ndarray]] = None
    shared_files: Dict[str, str] = field(default_factory=dict)
    precision: str = 'fp32'

    def path(self, suffix: str) -> str:
        """The absolute path of the file ``stem + suffix`` in ``out_dir`` (absolute: converters
        that run in another folder read it too)."""
        return osp.abspath(osp.join(self.out_dir, self.stem + suffix))

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision {self.precision!r}: choose from {PRECISIONS}')
        if (self.precision == 'int8') != (self.calibration is not None):
            raise ValueError("calibration inputs come with precision 'int8' and only with it "
                             f'(precision {self.precision!r}, calibration '
                             f"{'given' if self.calibration is not None else 'None'})")

    @property
    def int8(self) -> bool:
        """Whether ``convert`` writes the quantized graph."""
        return self.precision == 'int8'


class Backend:
    """One runtime: ``convert`` writes its files, ``load`` runs them.

    Class attributes:
        name: the ``--backend`` name (set by :func:`register_backend`).
        packages: the import names it needs (for a clear error when one is missing).
        precisions: the :data:`PRECISIONS` it converts and runs (:attr:`ConversionJob.precision`;
            ``'int8'``: ``convert`` quantizes on the job's calibration inputs);
            ``check_precision`` also says whether this machine has them.
        has_argmax: whether the runtime has an ArgMax operator (else the labels graph computes
            it by reductions, :class:`~vt_mm.deploy.onnx.SegmentationLabels`).
        has_integer_tensors: whether a graph may output int32 (else labels stay float32 and
            ``load``'s callable casts them).
        labels_argmax_layout: how the labels graph's argmax reads the class map, the faster
            one in this runtime (``argmax_layout`` of
            :class:`~vt_mm.deploy.onnx.SegmentationLabels`).
        nms_missing: why the runtime cannot run the detections graph (its NonMaxSuppression),
            or None where it can (:meth:`check_output`).
    """
    name = ''
    packages: Sequence[str] = ()
    precisions: Sequence[str] = ('fp32', )
    has_argmax = True
    has_integer_tensors = True
    labels_argmax_layout = 'rows'
    nms_missing: Optional[str] = None

    @classmethod
    def missing(cls) -> List[str]:
        """The packages of :attr:`packages` that cannot be imported."""
        missing = []
        for package in cls.packages:
            try:
                with quiet_stdout():  # MNN's import prints its CPU features
                    importlib.import_module(package)
            except ImportError:
                missing.append(package)
        return missing

    @classmethod
    def check_available(cls) -> None:
        missing = cls.missing()
        if missing:
            raise BackendUnavailable(
                f"backend '{cls.name}' needs {', '.join(missing)}, which is not installed: "
                'bash dev/setup_env.sh --deploy installs every runtime (requirements/deploy.txt)')

    @classmethod
    def check_precision(cls, precision: str) -> None:
        """Raises ValueError, naming the alternatives, where the backend cannot convert and
        run ``precision`` (not one of its :attr:`precisions`, or not one this CPU has:
        subclasses add that check)."""
        if precision not in PRECISIONS:
            raise ValueError(f'--precision {precision}: choose from {", ".join(PRECISIONS)}')
        if precision not in cls.precisions:
            others = [b for b, c in BACKENDS.items() if precision in c.precisions]
            raise ValueError(f"{cls.name} runs only {'/'.join(cls.precisions)} in vt-mm; "
                             f'--precision {precision} is on {others or "no backend"}')

    @classmethod
    def version(cls) -> str:
        """The installed version of the runtime's first package ('unknown' if none is
        recorded)."""
        from importlib import metadata
        try:
            return metadata.version(cls.packages[0])
        except (metadata.PackageNotFoundError, IndexError):
            return 'unknown'

    @classmethod
    def check_output(cls, output: str) -> None:
        """Raises ValueError, naming the runtimes that can, where the runtime cannot run graphs
        of ``output`` ('detections' needs NonMaxSuppression)."""
        if output == 'detections' and cls.nms_missing:
            others = [b for b, c in BACKENDS.items() if not c.nms_missing]
            raise ValueError(f'{cls.name} {cls.version()} cannot run the detections graph: '
                             f'{cls.nms_missing}. Detections run in {", ".join(others)}; '
                             '--output logits exports the backbone + neck features for it')

    @classmethod
    def app_settings(cls, precision: str = 'fp32') -> Optional[str]:
        """The one line an app needs so that the runtime computes in the precision vt-mm
        checked (``export.py`` prints it under the backend's result), or None where the
        runtime's defaults do. The deployment guide has the same settings per language."""
        return None

    def programs(self) -> List[str]:
        """Executables ``convert`` starts (allowed by :func:`vt_mm.deploy.offline.offline`)."""
        return []

    def convert(self, job: ConversionJob) -> List[str]:
        """Writes the runtime's files for ``job``; returns their paths (the model file first)."""
        raise NotImplementedError

    def load(self, files: Sequence[str], job: ConversionJob,
             num_threads: int = 1) -> Callable[[np.ndarray], List[np.ndarray]]:
        """A callable: input (like ``job.example``) -> the outputs, as the ONNX graph gives them."""
        raise NotImplementedError
