"""Timing several callables in alternation, so that machine noise hits all of them."""
import statistics
import sys
import time
from typing import List, Tuple

import torch

__all__ = ['time_alternately']


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
                # stderr is line-buffered (Python 3.9+): the line shows at once
                print(f'[benchmark] {label} run {r + 1}/{runs}', file=sys.stderr)
    return [(statistics.median(t), min(t), max(t)) for t in times]
