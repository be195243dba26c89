"""FLOPs of vt-mm's models: mmengine's FlopAnalyzer with the operators it misses.

One multiply-add counts as one FLOP (the papers' convention). mmengine has no handle for the
fused attention (``scaled_dot_product_attention``) or for ``baddbmm`` (the visual-token layers'
products with a bias or residual) and skips both without a word; :func:`flop_analyzer` adds
them, and ``import vt_mm`` adds them to mmengine's defaults (:mod:`vt_mm.utils.flop_handles`),
so the toolboxes' own ``get_flops.py`` counts them too.

Example:
    >>> import torch.nn as nn
    >>> flops, uncounted = count_flops(nn.Conv2d(3, 8, 1, bias=False), torch.randn(1, 3, 4, 4))
    >>> flops, uncounted  # 8 outputs x 3 inputs x 16 pixels; nothing left uncounted
    (384, [])
"""
from typing import List, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

from vt_mm.utils.flop_handles import FLOP_HANDLES, baddbmm_flop_jit, sdpa_flop_jit

__all__ = ['flop_analyzer', 'count_flops', 'sdpa_flop_jit', 'baddbmm_flop_jit']


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
    analyzer.set_op_handle(**FLOP_HANDLES)  # also mmengine's defaults after import vt_mm
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
