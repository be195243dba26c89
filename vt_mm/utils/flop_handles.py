"""mmengine's FLOP counter, taught the two operators vt-mm's models use that it skips.

mmengine's ``FlopAnalyzer`` (behind ``get_model_complexity_info`` and the toolboxes' own
``get_flops.py``) has no handle for the fused attention (``scaled_dot_product_attention``:
PyramidTNT, VT-FPN's and VT-ResNet's token transformers) or for ``baddbmm`` (the visual-token
layers' products with a bias or residual), and skips both without a word: it counted VT-FPN's
neck at 0.10 GFLOPs at 473x473 where the products alone are 2.0. ``import vt_mm`` adds both
handles to mmengine's default table, so every ``FlopAnalyzer`` built afterwards counts them.
One multiply-add counts as one FLOP, as mmengine's other handles do.

Example:
    >>> import torch
    >>> from mmengine.analysis import FlopAnalyzer
    >>> q = torch.randn(1, 2, 16, 8)
    >>> attention = lambda q: torch.nn.functional.scaled_dot_product_attention(q, q, q)
    >>> class Attention(torch.nn.Module):
    ...     def forward(self, q):
    ...         return attention(q)
    >>> FlopAnalyzer(Attention(), (q, )).total()  # 2 heads x 16 x 16 x (8 + 8)
    8192
"""
import math

__all__ = ['sdpa_flop_jit', 'baddbmm_flop_jit', 'FLOP_HANDLES', 'register_flop_handles']


def sdpa_flop_jit(inputs, outputs) -> int:
    """q (.., Nq, d) @ k^T (.., d, Nk), then attn (.., Nq, Nk) @ v (.., Nk, dv)."""
    from mmengine.analysis.jit_handles import get_shape
    q, k, v = (get_shape(x) for x in inputs[:3])
    return math.prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


def baddbmm_flop_jit(inputs, outputs) -> int:
    """``input + batch1 @ batch2``: the product's multiply-adds (the addition is not counted,
    as mmengine's ``addmm`` handle does not count it)."""
    from mmengine.analysis.jit_handles import get_shape
    a, b = get_shape(inputs[1]), get_shape(inputs[2])
    return a[0] * a[1] * a[2] * b[2]


FLOP_HANDLES = {
    'aten::scaled_dot_product_attention': sdpa_flop_jit,
    'aten::baddbmm': baddbmm_flop_jit,
    'aten::baddbmm_': baddbmm_flop_jit,  # VT-FPN accumulates in place when not training
}


def register_flop_handles() -> bool:
    """Adds :data:`FLOP_HANDLES` to mmengine's default FLOP handles (where a handle for the
    operator exists already, mmengine's is kept). Returns False where this mmengine keeps its
    table elsewhere (then only :func:`vt_mm.analysis.flop_analyzer` counts them)."""
    try:
        from mmengine.analysis import complexity_analysis
        table = complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS
    except (ImportError, AttributeError):
        return False
    for name, handle in FLOP_HANDLES.items():
        table.setdefault(name, handle)
    return True
