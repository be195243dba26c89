"""Convert one model for several backends and compare each with PyTorch: what
``tools/deployment/export.py`` runs.

Every backend gets the same static-shape ONNX graph (folded with onnxslim when it is
installed), or for converters that start from PyTorch the same network, and runs on the same
input as PyTorch eager. Conversions run inside :func:`vt_mm.deploy.offline.offline`.
"""
import os
import os.path as osp
import warnings
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..utils.timing import time_alternately
from .backends import PRECISIONS, ConversionJob, get_backend
from .backends.onnxruntime import OnnxRuntimeBackend
from .detection import detections_of, match_detections
from .offline import offline
from .onnx import export_onnx, exportable, onnx_op_counts

__all__ = ['DeployResult', 'DeployReport', 'deploy', 'load_runners', 'compare_outputs',
           'TOLERANCE', 'within_tolerance']

# max |backend - PyTorch|, absolute for outputs up to 1 and relative above (float32 rounding
# grows with the values)
TOLERANCE = 1e-4
# INT8 graphs of trained models follow fp32 with a cosine of 0.998-0.9998 on a calibration
# image (VT-FPN and SeaFormer-T demo models: onnxruntime, OpenVINO, TFLite); MNN's VT-FPN graph,
# which scores 4 mIoU, 0.95
INT8_COSINE_WARNING = 0.99


def within_tolerance(max_abs_diff: float, max_abs_output: float) -> bool:
    """Whether a backend's outputs match PyTorch's: ``max_abs_diff`` at most :data:`TOLERANCE`,
    absolute for outputs up to 1 and relative above."""
    return max_abs_diff <= TOLERANCE * max(1.0, max_abs_output)


@dataclass
class DeployResult:
    """One backend's conversion of a :func:`deploy` call, checked against PyTorch.

    Attributes:
        backend: the backend's name.
        files: what its conversion wrote (the model file first).
        max_abs_diff: max |backend - PyTorch| over the outputs on the example input.
        max_abs_output: max |PyTorch output| (the tolerance is relative above 1).
        agreement: labels graphs: the share of pixels equal to PyTorch's.
        latency_ms: median latency on the example input.
        error: ``'ExceptionType: message'`` where the conversion or the run failed.
        precision: the arithmetic it ran in; other than fp32 the differences are reported, not
            judged against :data:`TOLERANCE` (the caller judges them on data:
            tools/deployment/deploy_accuracy.py).
        calibration_cosine: INT8: the cosine similarity of the outputs to PyTorch's on the first
            calibration input (the random example is out of distribution for a trained
            model's scales).
        detections_match: detection graphs: whether the backend's detections are PyTorch's
            (:func:`~vt_mm.deploy.detection.match_detections`: same count, same classes, IoU
            >= 0.99, scores within 1e-3); ``detections_message`` says which one differs,
            ``detections_compared`` how many PyTorch made.
    """
    backend: str
    files: List[str] = field(default_factory=list)
    max_abs_diff: Optional[float] = None
    max_abs_output: Optional[float] = None
    agreement: Optional[float] = None
    latency_ms: Optional[float] = None
    error: Optional[str] = None
    precision: str = 'fp32'
    calibration_cosine: Optional[float] = None
    detections_match: Optional[bool] = None
    detections_message: Optional[str] = None
    detections_compared: Optional[int] = None

    @property
    def ok(self) -> bool:
        if self.error is not None:
            return False
        if self.detections_match is not None and self.precision == 'fp32':
            return self.detections_match
        if self.agreement is not None or self.precision != 'fp32':
            return True  # reported, judged by the caller (accuracy on data)
        return within_tolerance(self.max_abs_diff, self.max_abs_output)

    def warning(self) -> Optional[str]:
        """A warning for an INT8 graph that departs from fp32 on calibration data, or for a
        detections graph that detected nothing on the example (nothing was compared)."""
        if self.detections_compared == 0:
            return (f'{self.backend}: no detection above the score threshold on the random '
                    'example, so no box was compared (fresh weights score every anchor near the '
                    "head's prior); export a trained checkpoint to check boxes")
        if self.calibration_cosine is None or self.calibration_cosine >= INT8_COSINE_WARNING:
            return None
        return (f'{self.backend}: the INT8 graph departs from fp32 on a calibration image '
                f'(cosine {self.calibration_cosine:.4f} < {INT8_COSINE_WARNING}); with trained '
                'weights score it with tools/deployment/deploy_accuracy.py before using it '
                '(freshly initialised weights quantize worse)')

    def line(self) -> str:
        if self.error is not None:
            return f'{self.backend}: FAILED {self.error}'
        if self.detections_match is not None:
            what = (f'detections {"match" if self.detections_match else "DIFFER"}: '
                    f'{self.detections_message}')
        elif self.agreement is not None:
            what = f'agreement {100 * self.agreement:.3f}% max_abs_diff {self.max_abs_diff:g}'
        else:
            what = (f'max_abs_diff {self.max_abs_diff:.2e} (max abs output '
                    f'{self.max_abs_output:.2f})')
        if self.calibration_cosine is not None:
            what += f', cosine to fp32 on a calibration image {self.calibration_cosine:.4f}'
        return (f'{self.backend}: {what} latency {self.latency_ms:.1f} ms '
                f'({osp.basename(self.files[0])})')


@dataclass
class DeployReport:
    """What :func:`deploy` returns.

    Attributes:
        onnx: the path of the ONNX graph every backend started from.
        op_counts: that graph's operators, {op type: count}.
        outputs: its output names.
        example: the input every backend and PyTorch ran (numpy, 1 x 3 x H x W).
        results: one :class:`DeployResult` per backend asked for, in that order.
        jobs: backend -> the :class:`~vt_mm.deploy.backends.ConversionJob` it converted (to
            load it again, e.g. with other thread counts: :func:`load_runners`).
    """
    onnx: str
    op_counts: Dict[str, int]
    outputs: List[str]
    example: np.ndarray
    results: List[DeployResult]
    jobs: Dict[str, ConversionJob]

    @property
    def ok(self) -> bool:
        """Whether every backend converted and matches PyTorch."""
        return all(r.ok for r in self.results)


def compare_outputs(got: Sequence[np.ndarray], expected: Sequence[np.ndarray], labels: bool):
    """(max_abs_diff, max_abs_output, agreement or None) of a backend's outputs."""
    if len(got) != len(expected):
        raise AssertionError(f'{len(got)} outputs, PyTorch gives {len(expected)}')
    for g, e in zip(got, expected):
        if g.size != e.size:
            raise AssertionError(f'output of shape {g.shape}, PyTorch gives {e.shape}')
    got = [np.asarray(g).reshape(e.shape) for g, e in zip(got, expected)]
    diff = max(float(np.abs(g.astype(np.float64) - e).max()) for g, e in zip(got, expected))
    peak = max(float(np.abs(e).max()) for e in expected)
    agreement = None
    if labels:
        agreement = float(np.mean([np.mean(g.astype(np.int64) == e) for g, e in
                                   zip(got, expected)]))
    return diff, peak, agreement


def files_in(directory: str) -> set:
    """The names in ``directory`` (empty if it does not exist)."""
    return set(os.listdir(directory)) if osp.isdir(directory) else set()


def remove_new_files(directory: str, before: set) -> List[str]:
    """Removes what ``directory`` holds beyond the names ``before``; returns the names."""
    import shutil
    removed = sorted(files_in(directory) - set(before))
    for name in removed:
        path = osp.join(directory, name)
        if osp.isdir(path) and not osp.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except OSError:
                pass
    return removed


def torch_outputs(net: nn.Module, x: np.ndarray) -> List[np.ndarray]:
    """``net``'s outputs on ``x`` as a list of numpy arrays (one output or several)."""
    with torch.no_grad():
        out = net(torch.from_numpy(x))
    return [o.numpy() for o in ([out] if isinstance(out, torch.Tensor) else out)]


def cosine(got: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float:
    """Cosine similarity of two output lists, each flattened into one vector: how closely an
    INT8 graph follows fp32."""
    a = np.concatenate([np.asarray(g, np.float64).ravel() for g in got])
    b = np.concatenate([np.asarray(e, np.float64).ravel() for e in expected])
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def deploy(model: nn.Module, backends: Sequence[str], shape: Tuple[int, int], out_dir: str,
           stem: str, toolbox: Optional[str] = None, output: str = 'logits',
           calibration: Optional[Sequence[np.ndarray]] = None, num_threads: int = 1,
           repeats: int = 10, seed: int = 0, keep_going: bool = True,
           labels_upsample: int = 1, precision: str = 'fp32',
           image_shape: Optional[Tuple[int, int]] = None,
           example: Optional[np.ndarray] = None) -> DeployReport:
    """Exports ``model`` at ``shape``, converts it for each backend, runs every backend on the
    same random normalised image as PyTorch and times it.

    Args:
        model: the model (a toolbox model or a bare network; see
            :func:`~vt_mm.deploy.onnx.exportable`).
        backends: names from :data:`~vt_mm.deploy.backends.BACKENDS`.
        shape: the static input size (H, W).
        out_dir: where the files go (made if missing); a failed conversion leaves none.
        stem: the files' base name.
        toolbox: 'mmseg', 'mmdet' or 'mmpretrain' (found from the model where None).
        output: 'logits', 'labels' (segmentors: the argmax in the graph) or 'detections'
            (detectors: boxes, scores and labels after NMS, :mod:`vt_mm.deploy.detection`;
            compared with PyTorch detection by detection).
        calibration: the INT8 calibration inputs; given exactly with ``precision='int8'``
            (:func:`vt_mm.deploy.calibration.calibration_images`).
        num_threads: the runtimes' threads.
        repeats: timed runs per backend.
        seed: of the random example input.
        keep_going: a backend that fails is reported (its ``error``) instead of raising.
        labels_upsample: the labels graph's bilinear upsampling of the logits before the
            argmax (:class:`~vt_mm.deploy.onnx.SegmentationLabels`).
        precision: one of :data:`~vt_mm.deploy.backends.PRECISIONS`; each backend must list it
            in its ``precisions`` (``'bf16'`` runs the fp32 files in bf16 where the CPU has
            it; ``'int8'`` converts a statically quantized graph).
        image_shape: the detections graph's image inside its padded input (H, W), where boxes
            are clipped (:func:`~vt_mm.deploy.detection.detections_graph`); default the input.
        example: the (1, 3, H, W) input every backend is compared on, instead of the random
            one (a real image: a trained detector detects little on noise).

    Returns:
        DeployReport: the graph, the example input and one result per backend.

    Example:
        >>> import tempfile
        >>> from vt_mm.analysis import build_model
        >>> model, _, _ = build_model('vt_mm::seaformer/seaformer-tiny_8xb128_in1k.py')
        >>> report = deploy(model, ['onnxruntime'], (64, 64), tempfile.mkdtemp(), 'seaformer')
        >>> report.ok, report.results[0].backend
        (True, 'onnxruntime')
    """
    if precision not in PRECISIONS:
        raise ValueError(f'precision {precision!r}: choose from {", ".join(PRECISIONS)}')
    if (precision == 'int8') != (calibration is not None):
        raise ValueError("calibration inputs come with precision='int8' and only with it "
                         '(tools/deployment/export.py --precision int8 reads them from the '
                         "config's training split)")
    os.makedirs(out_dir, exist_ok=True)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, *shape, generator=gen)
    if example is not None:
        if tuple(np.shape(example)) != (1, 3, *shape):
            raise ValueError(f'example of shape {tuple(np.shape(example))}, the graph takes '
                             f'{(1, 3, *shape)}')
        x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
    try:
        import onnxslim  # noqa: F401
        simplify = True
    except ImportError:
        simplify = False
        warnings.warn('onnxslim is not installed: the ONNX graph is not folded (bash '
                      'dev/setup_env.sh --deploy installs it)')
    jobs = {}  # labels options -> the job every backend with those capabilities converts
    calibration_expected = {}  # job stem -> PyTorch's outputs on calibration[0]

    def job_for(backend_class) -> ConversionJob:
        options = {}
        if output == 'labels':
            options = dict(argmax_by_reduction=not backend_class.has_argmax,
                           integer=backend_class.has_integer_tensors,
                           logits_upsample=labels_upsample)
            if backend_class.has_argmax:
                options['argmax_layout'] = backend_class.labels_argmax_layout
        if output == 'detections' and image_shape is not None:
            options = dict(image_shape=tuple(image_shape))
        key = tuple(sorted(options.items()))
        if key not in jobs:
            net = exportable(model, toolbox, output, **options).eval()
            expected = torch_outputs(net, x.numpy())
            plain = not options.get('argmax_by_reduction') and options.get('integer', True)
            # each graph kind its own files (a detector's features and detections side by side)
            stem_ = (stem + ('.labels' if output == 'labels' else '') +
                     ('.detections' if output == 'detections' else '') +
                     (f'.up{labels_upsample}' if output == 'labels' and labels_upsample > 1
                      else '') + ('' if plain else '.argmax-by-reduction') +
                      ('.nhwc-argmax' if options.get('argmax_layout') == 'nhwc' else ''))
            onnx_path = osp.join(out_dir, stem_ + '.onnx')
            names = export_onnx(model, onnx_path, shape, dynamic=False, toolbox=toolbox,
                                output=output, simplify=simplify, **options)
            jobs[key] = ConversionJob(
                onnx_path=onnx_path, net=net, example=x.numpy(), output_names=names,
                output_shapes=[e.shape for e in expected], out_dir=out_dir, stem=stem_,
                calibration=calibration, integer_outputs=output == 'labels',
                expected=expected, precision=precision)
            if calibration is not None:  # PyTorch on the first calibration input (cosine)
                calibration_expected[jobs[key].stem] = torch_outputs(net, calibration[0])
        return jobs[key]

    written_before = files_in(out_dir)
    try:
        main_job = job_for(OnnxRuntimeBackend)
    except BaseException:
        remove_new_files(out_dir, written_before)  # a partial graph is of no use
        raise
    results, used_jobs = [], {}
    for name in backends:
        result = DeployResult(name, precision=precision)
        before_backend = files_in(out_dir)
        try:
            backend = get_backend(name)
            job = used_jobs[name] = job_for(type(backend))
            backend.check_precision(precision)
            backend.check_output(output)
            with offline(allowed_programs=backend.programs()):
                result.files = backend.convert(job)
            run = backend.load(result.files, job, num_threads=num_threads)
            got = run(job.example)
            if output == 'detections':
                expected = detections_of(job.expected)
                result.detections_match, result.detections_message = match_detections(
                    detections_of(got), expected)
                result.detections_compared = len(expected[0])
            else:
                result.max_abs_diff, result.max_abs_output, result.agreement = compare_outputs(
                    got, job.expected, labels=output == 'labels')
            if calibration is not None:
                result.calibration_cosine = cosine(run(calibration[0]),
                                                   calibration_expected[job.stem])
            result.latency_ms = 1000 * time_alternately(
                [lambda: run(job.example)], runs=repeats, warmup=2, device='cpu')[0][0]
        except Exception as e:  # noqa: BLE001  (reported per backend)
            # what the failed conversion wrote is of no use (files other backends share stay)
            shared = {osp.basename(p) for j in jobs.values() for p in j.shared_files.values()}
            remove_new_files(out_dir, before_backend | shared)
            if not keep_going:
                raise
            result.error = f'{type(e).__name__}: {e}'
        results.append(result)
    return DeployReport(onnx=main_job.onnx_path, op_counts=onnx_op_counts(main_job.onnx_path),
                        outputs=main_job.output_names, example=main_job.example,
                        results=results, jobs=used_jobs)


def load_runners(report: DeployReport, num_threads: int = 1, precision: Optional[str] = None,
                 backends: Optional[Sequence[str]] = None) -> dict:
    """backend -> runner (input -> outputs) of every backend of a :func:`deploy` report that
    converted and matches PyTorch (of ``backends``, if given), loaded with ``num_threads``;
    ``precision`` runs the same fp32 files in another arithmetic (``'bf16'``)."""
    runners = {}
    for r in report.results:
        if r.ok and (backends is None or r.backend in backends):
            job = report.jobs[r.backend]
            if precision is not None and precision != job.precision:
                if job.int8 or precision == 'int8':
                    raise ValueError(f'{r.backend}: the {job.precision} files cannot run in '
                                     f'{precision}; deploy(precision={precision!r}) converts '
                                     'them')
                job = replace(job, precision=precision)
            runners[r.backend] = get_backend(r.backend).load(r.files, job,
                                                             num_threads=num_threads)
    return runners
