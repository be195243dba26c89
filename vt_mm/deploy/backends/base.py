"""The interface every deployment backend implements (one module per runtime).

A backend converts the static ONNX graph that :func:`vt_mm.deploy.export_onnx` writes (or, where
its converter starts from PyTorch, the same network) into its runtime's files, and loads those
files into a callable that maps the normalised NCHW image (numpy float32, batch 1) to the
graph's outputs as numpy arrays in the ONNX layout. Adding a runtime is one module with one
:class:`Backend` subclass, registered in ``vt_mm.deploy.backends.BACKENDS``.
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

__all__ = ['Backend', 'ConversionJob', 'BackendUnavailable', 'quiet_stdout']


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
        calibration: INT8 calibration inputs (each like ``example``); None for fp32.
        integer_outputs: whether the outputs are labels that the caller expects as int32.
        expected: PyTorch's outputs on ``example`` (what the backend is compared with).
        shared_files: files made from ``onnx_path`` that several backends convert from, by
            kind (``'qdq'``: the INT8 graph onnxruntime and OpenVINO both run), made once per
            job.
        precision: the arithmetic the runtime runs the fp32 files in: ``'fp32'``, or a reduced
            one the backend lists in :attr:`Backend.precisions` (``'bf16'``), an opt-in that
            changes only how ``load`` compiles the graph (the files keep fp32 weights).
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

    @property
    def int8(self) -> bool:
        return self.calibration is not None


class Backend:
    """One runtime: ``convert`` writes its files, ``load`` runs them.

    Class attributes:
        name: the ``--backend`` name.
        packages: the import names it needs (for a clear error when one is missing).
        supports_int8: whether ``convert`` takes calibration data.
        precisions: the arithmetic precisions ``load`` can run the fp32 files in
            (:attr:`ConversionJob.precision`); ``check_precision`` says whether this machine
            has them.
        has_argmax: whether the runtime has an ArgMax operator (else the labels graph computes
            it by reductions, :class:`~vt_mm.deploy.onnx.SegmentationLabels`).
        has_integer_tensors: whether a graph may output int32 (else labels stay float32 and
            ``load``'s callable casts them).
        labels_argmax_layout: how the labels graph's argmax reads the class map, the faster
            one in this runtime (``argmax_layout`` of
            :class:`~vt_mm.deploy.onnx.SegmentationLabels`).
    """
    name = ''
    packages: Sequence[str] = ()
    supports_int8 = False
    precisions: Sequence[str] = ('fp32', )
    has_argmax = True
    has_integer_tensors = True
    labels_argmax_layout = 'rows'

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
                'bash tools/setup_env.sh --deploy installs every runtime (requirements/deploy.txt)')

    @classmethod
    def check_precision(cls, precision: str) -> None:
        """Raises ValueError, naming the alternatives, where ``load`` cannot run ``precision``
        (not a precision of the backend, or not one this CPU has)."""
        if precision not in cls.precisions:
            from . import BACKENDS
            others = [b for b, c in BACKENDS.items() if precision in c.precisions]
            raise ValueError(f"{cls.name} runs only {'/'.join(cls.precisions)} in vt-mm; "
                             f'--precision {precision} is on {others or "no backend"}')

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
