"""FLOP counting (vt_mm/analysis/flops.py): the operators mmengine misses."""
import torch
import torch.nn as nn

from vt_mm import analysis


def test_flop_handles_count_multiply_adds():

    class Attention(nn.Module):

        def forward(self, q):
            k = torch.ones(2, 3, 7, 4)
            v = torch.ones(2, 3, 7, 6)
            return nn.functional.scaled_dot_product_attention(q, k, v)

    q = torch.ones(2, 3, 5, 4)
    total, skipped = analysis.count_flops(Attention(), q)
    assert total == 2 * 3 * 5 * 7 * (4 + 6) and skipped == []

    class Products(nn.Module):

        def forward(self, a):
            b = torch.ones(2, 3, 4)
            return torch.baddbmm(torch.zeros(2, 5, 4), a, b)

    total, _ = analysis.count_flops(Products(), torch.ones(2, 5, 3))
    assert total == 2 * 5 * 3 * 4


def test_batch_norm_is_counted_only_when_asked():
    net = nn.Sequential(nn.Conv2d(2, 4, 1, bias=False), nn.BatchNorm2d(4)).eval()
    x = torch.ones(1, 2, 3, 3)
    without, _ = analysis.count_flops(net, x)
    with_bn, _ = analysis.count_flops(net, x, count_bn=True)
    assert without == 2 * 4 * 9 and with_bn > without


def test_the_counter_logs_no_warnings_for_skipped_operators_or_unused_modules(monkeypatch):
    """The benchmarks and tools print their own table of what was left uncounted; mmengine's
    analyzer would log each unsupported operator and every submodule the trace never called."""
    from mmengine.analysis import FlopAnalyzer, jit_analysis

    logged = []
    monkeypatch.setattr(jit_analysis, 'print_log', lambda msg, *a, **k: logged.append(msg))

    class Net(nn.Module):

        def __init__(self):
            super().__init__()
            self.used = nn.Linear(3, 3)
            self.unused = nn.Linear(3, 3)

        def forward(self, x):
            return torch.cumsum(self.used(x), 0)  # cumsum: no handle in mmengine

    x = torch.ones(2, 3)
    total, skipped = analysis.count_flops(Net(), x)
    assert total == 2 * 3 * 3 and skipped == ['aten::cumsum'] and logged == []
    # mmengine's analyzer at its defaults warns about both: what flop_analyzer switches off
    with torch.no_grad():
        FlopAnalyzer(Net(), (x, )).total()
    assert any('aten::cumsum' in m for m in logged)
    assert any('unused' in m for m in logged)
