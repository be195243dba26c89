"""vt_mm/analysis/memory.py: activation memory counted per storage, and estimated at a size
the network has not run at (export.py refuses shapes that would not fit)."""
import builtins

import torch
import torch.nn as nn

from vt_mm.analysis import memory


class _Branchy(nn.Module):
    """Takes one more step on inputs wider than 150 pixels: its probes' traces differ."""

    def forward(self, x):
        y = x * 2
        if x.shape[-1] > 150:
            y = y + 1
        return y


def test_peak_counts_each_storage_while_it_lives():
    x = torch.zeros(1, 3, 32, 32)
    assert memory.peak_activation_bytes(nn.Conv2d(3, 8, 1), x) == 8 * 32 * 32 * 4
    seq = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    # conv out and relu out alive together (32 KiB each), then relu out and the last conv's
    events, sizes = memory._allocation_trace(seq, x)
    assert events == [('+', 0), ('+', 1), ('-', 0), ('+', 2), ('-', 1), ('-', 2)]
    assert sizes == [32768, 32768, 16384]
    assert memory.peak_activation_bytes(seq, x) == 65536
    assert memory._peak([('+', 0), ('+', 1), ('-', 0), ('+', 2)], [5, 7, 3]) == 12


def test_estimate_equals_the_measured_peak_at_sizes_never_run():
    seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    for shape in ((64, 64), (300, 200), (97, 131)):
        assert memory.estimate_peak_bytes(seq, shape) == memory.peak_activation_bytes(
            seq, torch.zeros(1, 3, *shape)), shape


def test_estimate_scales_the_largest_probe_where_probes_take_different_paths():
    branchy = _Branchy()
    largest = memory.peak_activation_bytes(branchy, torch.zeros(1, 3, 256, 256))
    assert largest == 2 * 3 * 256 * 256 * 4
    assert memory.estimate_peak_bytes(branchy, (512, 512)) == largest * 4
    assert memory.estimate_peak_bytes(branchy, (128, 128)) == largest  # never below the probe


def test_available_memory_reads_memavailable_or_says_unknown(monkeypatch, tmp_path):
    meminfo = tmp_path / 'meminfo'
    meminfo.write_text('MemTotal: 100 kB\nMemAvailable:   2048 kB\n')
    real_open = builtins.open
    monkeypatch.setattr(builtins, 'open', lambda path, *a, **k: real_open(
        meminfo if path == '/proc/meminfo' else path, *a, **k))
    assert memory.available_memory_bytes() == 2048 * 1024
    meminfo.write_text('MemTotal: 100 kB\n')
    assert memory.available_memory_bytes() is None
    meminfo.write_text('MemAvailable: lots\n')
    assert memory.available_memory_bytes() is None
    meminfo.unlink()
    assert memory.available_memory_bytes() is None
