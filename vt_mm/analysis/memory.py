"""Activation memory of a network at a size it has not run at yet (export.py's --shape check).

Example:
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    >>> estimate_peak_bytes(net, (512, 512)) > 8 * 512 * 512 * 4  # at least the conv output
    True
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn

__all__ = ['peak_activation_bytes', 'estimate_peak_bytes', 'available_memory_bytes']


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
    areas = np.array([p * p for p in probes])
    vandermonde = np.stack([np.ones(len(probes)), areas, areas**2], axis=1)
    measured = np.array([t[1] for t in traces])  # probes x storages (solve works in float64)
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
