"""Timing in alternation (vt_mm/utils/timing.py)."""
import torch

from vt_mm import analysis


def test_time_alternately_runs_warmup_then_alternates(monkeypatch):
    calls = []
    fns = [lambda: calls.append('a'), lambda: calls.append('b')]
    rows = analysis.time_alternately(fns, runs=3, warmup=1, device='cpu', settle_s=0.0)
    assert calls == ['a', 'b'] * 4 and len(rows) == 2
    assert all(lo <= med <= hi for med, lo, hi in rows)
    grads = []
    analysis.time_alternately([lambda: grads.append(torch.is_grad_enabled())], runs=1,
                              warmup=0, device='cpu')
    analysis.time_alternately([lambda: grads.append(torch.is_grad_enabled())], runs=1,
                              warmup=0, device='cpu', grad=True)
    assert grads == [False, True]
