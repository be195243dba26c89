"""Analysis helpers shared by every script under ``tools/analysis_tools`` (one of each):

* :func:`build_model`: a config (path or ``mmseg::...``) -> a freshly initialised model in eval
  mode, nothing downloaded, SyncBN as BN;
* :class:`ImageToOutputs`: the network from a normalised image batch to its raw outputs
  (segmentation logits, detector head maps before NMS, classifier logits), for every toolbox;
  what FLOPs, latency and ONNX export see;
* :func:`count_flops`: mmengine.analysis multiply-adds (1 MAC = 1 FLOP, the papers' convention)
  with fused attention and ``baddbmm``/``baddbmm_`` counted; BatchNorm left out unless
  ``count_bn`` (it folds into the preceding conv at inference);
* :func:`time_alternately`: median/min/max seconds of several callables timed in alternation, so
  machine noise hits all of them.
"""
import contextlib
import logging
import math
import os.path as osp
import statistics
import sys
import time
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config
from mmengine.registry import init_default_scope

from .engine import runtime

__all__ = ['build_model', 'default_shape', 'ImageToOutputs', 'count_flops', 'time_alternately',
           'resolve_config_path', 'peak_activation_bytes', 'estimate_peak_bytes',
           'available_memory_bytes']


def sdpa_flop_jit(inputs, outputs) -> int:
    """q (.., Nq, d) @ k^T (.., d, Nk), then attn (.., Nq, Nk) @ v (.., Nk, dv)."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def baddbmm_flop_jit(inputs, outputs) -> int:
    a, b = get_shape(inputs[1]), get_shape(inputs[2])
    return a[0] * a[1] * a[2] * b[2]


def resolve_config_path(config: str) -> str:
    """Accepts 'mmseg::path/in/package.py' as well as file paths."""
    if '::' in config:
        import importlib
        pkg, rel = config.split('::', 1)
        module = importlib.import_module(pkg)
        return osp.join(osp.dirname(module.__file__), '.mim', 'configs', rel)
    return config


@contextlib.contextmanager
def quiet_mmengine_logs(verbose: bool = False):
    """mmengine's INFO lines (one per parameter from ``init_weights``: ~1000 for a detector)
    held back while a model is built, so that a tool prints its result; warnings still show."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


# the tools' --verbose: show mmengine's initialisation log when they build models
VERBOSE_BUILD = False


def build_model(config: str, verbose: Optional[bool] = None) -> Tuple[nn.Module, Config, str]:
    """The config's model, freshly initialised (no checkpoint is downloaded), in eval mode;
    mmengine's initialisation log only with ``verbose`` (default: :data:`VERBOSE_BUILD`)."""
    with quiet_mmengine_logs(VERBOSE_BUILD if verbose is None else verbose):
        return _build_model(config)


def _build_model(config: str) -> Tuple[nn.Module, Config, str]:
    cfg = Config.fromfile(resolve_config_path(config))
    toolbox = runtime.toolbox_of(cfg)
    runtime.replace_syncbn(cfg)
    # benchmark a freshly initialised network: nothing is downloaded
    if cfg.model.get('pretrained'):
        cfg.model.pretrained = None
    for _, parent, key in list(runtime._walk(cfg.model)):
        value = parent[key]
        if key == 'init_cfg' and isinstance(value, dict) and value.get('type') == 'Pretrained':
            parent[key] = None
    init_default_scope(toolbox)
    registry = {
        'mmseg': 'mmseg.registry',
        'mmdet': 'mmdet.registry',
        'mmpretrain': 'mmpretrain.registry'
    }[toolbox]
    import importlib
    models = importlib.import_module(registry).MODELS
    model = models.build(cfg.model)
    model.init_weights()
    model.eval()
    return model, cfg, toolbox


def trained_like_bn(model: nn.Module, affine: bool = True) -> nn.Module:
    """BatchNorm with non-trivial statistics and, with ``affine``, affine terms (seed 0), in
    place.

    Freshly built models are degenerate where it matters for deployment: ResNet's last BN of
    every residual branch (``zero_init_residual``) and SeaFormer's attention projections start
    with gamma 0, so a converter that folds constants (litert-torch) removes those branches and
    a latency measured on them is of a smaller network (VT-ResNet-18 in TFLite: 3 of its 15
    convolutions left). Latency benchmarks and export tests run on these weights instead; an
    export that got BN wrong (training mode, dropped) cannot pass on them either.

    Gammas that start at zero get small values, U(0.05, 0.15), the others U(0.8, 1.2): a zero
    gamma marks a residual branch meant to start near identity, and giving every such branch a
    gain near 1 made random deep networks blow up their activations (SeaFormer-B/L, VT-ResNet-50)
    until fp32 rounding alone exceeded the runtimes' 1e-4 parity check. Small but non-zero keeps
    every branch in the graph and the activations in the range trained weights have.
    """
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 0.4 + 0.8)
            if affine and m.affine:
                was_zero = m.weight.data == 0
                gain = torch.rand(n, generator=gen) * 0.4 + 0.8
                small = torch.rand(n, generator=gen) * 0.1 + 0.05
                m.weight.data.copy_(torch.where(was_zero, small, gain))
                m.bias.data.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
    return model


def default_shape(cfg: Config, toolbox: str) -> Tuple[int, int]:
    if toolbox == 'mmseg':
        size = cfg.get('crop_size', None)
        return tuple(size) if size else (512, 512)
    if toolbox == 'mmdet':
        return (800, 1333)
    for step in cfg.get('test_pipeline', None) or cfg.test_dataloader.dataset.get('pipeline', []):
        if step.get('type') == 'CenterCrop':
            crop = step['crop_size']
            return (crop, crop) if isinstance(crop, int) else tuple(crop)[::-1]
    return (224, 224)


def toolbox_of_model(model: nn.Module) -> str:
    """'mmseg', 'mmdet' or 'mmpretrain': the toolbox whose model base class ``model`` is."""
    for cls in type(model).__mro__:
        root = cls.__module__.split('.')[0]
        if root in ('mmseg', 'mmdet', 'mmpretrain'):
            return root
    raise TypeError(f'{type(model).__name__} is not an mmseg, mmdet or mmpretrain model; pass '
                    "toolbox='mmseg' | 'mmdet' | 'mmpretrain'")


class ImageToOutputs(nn.Module):
    """Normalised images (N, 3, H, W) -> raw network outputs, for every toolbox.

    Args:
        model: an mmseg segmentor, mmdet detector or mmpretrain classifier.
        toolbox (str, optional): 'mmseg', 'mmdet' or 'mmpretrain'; default: from the model's
            class (the toolbox its base class comes from).
    """

    def __init__(self, model: nn.Module, toolbox: Optional[str] = None):
        super().__init__()
        self.model, self.toolbox = model, toolbox or toolbox_of_model(model)
        # a new Module is in training mode; torch.onnx.export restores the wrapper's mode
        # afterwards, recursively, which would leave an eval model training (BN on batch stats)
        self.train(model.training)

    def forward(self, x):
        if self.toolbox == 'mmpretrain':
            return self.model(x, mode='tensor')
        if self.toolbox == 'mmdet':  # two-stage detectors need the image metadata
            from mmdet.structures import DetDataSample
            shape = tuple(x.shape[2:])
            samples = [
                DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                                            batch_input_shape=shape, scale_factor=(1.0, 1.0)))
                for _ in range(x.shape[0])
            ]
            return self.model._forward(x, samples)
        return self.model._forward(x)


def flop_analyzer(net: nn.Module, inputs) -> FlopAnalyzer:
    """mmengine's FlopAnalyzer for vt-mm's models: the one FLOP counter of the benchmarks and tests.

    mmengine has no handle for the fused attention (``scaled_dot_product_attention``) or for
    ``baddbmm`` (the visual-token layers' products with a bias or residual), and would skip them
    silently; both are added here. One multiply-add counts as one FLOP (the papers' convention);
    BatchNorm is counted, ``by_operator()['batch_norm']`` gives its share. Call the counting
    methods under ``torch.no_grad()``.

    Args:
        net: the module to count.
        inputs: the positional inputs of ``net``, a tuple.
    """
    analyzer = FlopAnalyzer(net, inputs)
    analyzer.set_op_handle(**{
        'aten::scaled_dot_product_attention': sdpa_flop_jit,
        'aten::baddbmm': baddbmm_flop_jit,
        'aten::baddbmm_': baddbmm_flop_jit,  # VT-FPN accumulates in place when not training
    })
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


def count_flops(net: nn.Module, x: torch.Tensor, count_bn: bool = False) -> Tuple[int, List[str]]:
    """(FLOPs of ``net(x)``, the operators left uncounted): :func:`flop_analyzer`'s total,
    BatchNorm left out unless ``count_bn``."""
    analyzer = flop_analyzer(net, (x, ))
    with torch.no_grad():
        total = analyzer.total()
        if not count_bn:  # set_op_handle(..., None) does not remove a default handle
            total -= analyzer.by_operator().get('batch_norm', 0)
    skipped = sorted(analyzer.unsupported_ops().keys())
    return total, skipped


def time_alternately(fns: List, runs: int, warmup: int, device: str, label: str = '',
                     grad: bool = False,
                     settle_s: float = 0.05) -> List[Tuple[float, float, float]]:
    """(median, min, max) seconds per callable, the callables timed in alternation.

    Without autograd unless ``grad`` (to time training steps). On the CPU, with more than one
    callable, the timer sleeps ``settle_s`` before each timed call: runtimes' thread pools
    (onnxruntime's, OpenMP's in PyTorch and ncnn) spin-wait for work after a call returns, and
    with as many threads as cores the next runtime's threads then share cores with spinning
    ones (measured: a 2-thread TFLite INT8 SeaFormer-L right after a 2-thread onnxruntime call
    took 55 ms instead of 28 ms; with a 50 ms pause 28 ms)."""
    settle = settle_s if device == 'cpu' and len(fns) > 1 else 0.0
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    times: List[List[float]] = [[] for _ in fns]
    with torch.set_grad_enabled(grad):
        for _ in range(warmup):
            for fn in fns:
                fn()
        sync()
        started = time.perf_counter()
        for r in range(runs):
            for i, fn in enumerate(fns):
                if settle:
                    time.sleep(settle)
                t0 = time.perf_counter()
                fn()
                sync()
                times[i].append(time.perf_counter() - t0)
            if time.perf_counter() - started > 5:  # progress on long runs
                print(f'[benchmark] {label} run {r + 1}/{runs}', file=sys.stderr, flush=True)
    return [(statistics.median(t), min(t), max(t)) for t in times]


def _allocation_trace(net: nn.Module, x: torch.Tensor) -> Tuple[List[Tuple[str, int]], List[int]]:
    """The storages ``net(x)`` (no autograd) allocates and frees, in order: events
    ``('+', k)`` / ``('-', k)`` and the size of each storage k in bytes (one per storage, however
    many tensors view it)."""
    import itertools
    import weakref

    from torch.utils._python_dispatch import TorchDispatchMode
    events: List[Tuple[str, int]] = []
    sizes: List[int] = []
    live = {}
    counter = itertools.count()

    def freed(pointer, key):
        live.pop(pointer, None)
        events.append(('-', key))

    class Record(TorchDispatchMode):

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    pointer = storage.data_ptr()
                    if pointer and pointer not in live:
                        key = live[pointer] = next(counter)
                        sizes.append(storage.nbytes())
                        events.append(('+', key))
                        weakref.finalize(storage, freed, pointer, key)
            return out

    with torch.no_grad(), Record():
        out = net(x)
    del out
    return events, sizes


def _peak(events: List[Tuple[str, int]], sizes) -> int:
    live = peak = 0
    for kind, key in events:
        live += sizes[key] if kind == '+' else -sizes[key]
        peak = max(peak, live)
    return int(peak)


def peak_activation_bytes(net: nn.Module, x: torch.Tensor) -> int:
    """The most bytes of tensors that ``net(x)`` (no autograd) holds alive at once, counted
    at every operator's output (a storage counted once, freed when its last tensor goes)."""
    return _peak(*_allocation_trace(net, x))


def estimate_peak_bytes(net: nn.Module, shape: Tuple[int, int],
                        probes: Tuple[int, ...] = (128, 192, 256)) -> int:
    """Activation memory of ``net`` on one image of ``shape``, without allocating it.

    The network runs on three small square probes; every storage it allocates gets its size
    fitted as ``c + a * pixels + b * pixels**2`` (constant tables, convolution maps, global
    attention) and the same sequence of allocations and frees is replayed at ``shape``. Where
    the probes take different paths (shape-dependent branches), the largest probe's peak is
    scaled by the pixel ratio instead."""
    import numpy as np
    traces = [_allocation_trace(net, torch.zeros(1, 3, p, p)) for p in probes]
    area = float(shape[0] * shape[1])
    if any(t[0] != traces[0][0] for t in traces[1:]):
        return int(_peak(*traces[-1]) * max(1.0, area / probes[-1]**2))
    areas = np.array([p * p for p in probes], dtype=np.float64)
    vandermonde = np.stack([np.ones(len(probes)), areas, areas**2], axis=1)
    measured = np.array([t[1] for t in traces], dtype=np.float64)  # probes x storages
    coefficients = np.linalg.solve(vandermonde, measured)
    sizes = np.maximum(np.array([1.0, area, area * area]) @ coefficients, 0.0)
    return _peak(traces[0][0], sizes)


def available_memory_bytes() -> Optional[int]:
    """What the OS can give this process now (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
