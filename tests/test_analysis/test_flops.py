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
