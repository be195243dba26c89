"""Timing in alternation (vt_mm/utils/timing.py)."""
import pytest
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


class _Clock:
    """A fake perf_counter: each callable advances it by its own duration."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def step(self, seconds):
        return lambda: setattr(self, 'now', self.now + seconds)


def test_times_are_each_callables_own_durations(monkeypatch):
    from vt_mm.utils import timing
    clock = _Clock()
    monkeypatch.setattr(timing.time, 'perf_counter', clock)
    monkeypatch.setattr(timing.time, 'sleep', lambda s: None)
    durations = iter([0.010, 0.030, 0.012, 0.020, 0.011, 0.040])
    fns = [lambda: clock.step(next(durations))(), lambda: clock.step(next(durations))()]
    (a, b) = timing.time_alternately(fns, runs=3, warmup=0, device='cpu')
    assert a == pytest.approx((0.011, 0.010, 0.012)) and b == pytest.approx((0.030, 0.020, 0.040))


def test_progress_lines_after_five_seconds_name_the_run(monkeypatch, capsys):
    """A line per run once more than 5 s have passed (exactly 5 s: none yet)."""
    from vt_mm.utils import timing
    clock = _Clock()
    monkeypatch.setattr(timing.time, 'perf_counter', clock)
    timing.time_alternately([clock.step(2.5)], runs=3, warmup=0, device='cpu')
    assert capsys.readouterr().err == '[benchmark]  run 3/3\n'  # 5.0 s after run 2, 7.5 after 3
    timing.time_alternately([clock.step(6.0)], runs=2, warmup=0, device='cpu', label='x')
    assert capsys.readouterr().err == '[benchmark] x run 1/2\n[benchmark] x run 2/2\n'


def test_settle_pause_default_and_cuda_synchronisation(monkeypatch):
    from vt_mm.utils import timing
    sleeps, syncs = [], []
    monkeypatch.setattr(timing.time, 'sleep', sleeps.append)
    monkeypatch.setattr(timing.torch.cuda, 'synchronize', lambda: syncs.append(1))
    timing.time_alternately([lambda: None, lambda: None], runs=1, warmup=0, device='cpu')
    assert sleeps == [0.05, 0.05] and syncs == []  # the pause is 50 ms; no sync on the CPU
    timing.time_alternately([lambda: None, lambda: None], runs=2, warmup=1, device='cuda')
    assert sleeps == [0.05, 0.05] and len(syncs) == 1 + 2 * 2  # after warm-up, after each call
