"""Activations whose exported graph every runtime computes exactly."""
import math

import torch
import torch.nn as nn

from .tracing import tracing

__all__ = ['TraceableGELU']


class TraceableGELU(nn.GELU):
    """``nn.GELU`` (exact, erf-based); while tracing (ONNX export) written as
    ``x * (0.5 + 0.5 * erf(x / sqrt(2)))``.

    The TorchScript exporter writes GELU as ``x * 0.5 * (1 + erf(x / sqrt(2)))``, which MNN 3.6's
    converter fuses into its own GELU kernel, an approximation off by ~5e-4 at |x| ~ 9
    (PyramidTNT's features then differ by ~1e-3). The rearranged product is the same function
    (float32 rounding apart), is not fused, and MNN's Erf is exact to 1e-6.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tracing() and self.approximate == 'none':
            return x * (0.5 + 0.5 * torch.erf(x * (1 / math.sqrt(2))))
        return super().forward(x)
