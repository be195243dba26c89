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


class _Rich(nn.Module):
    """Storages of every kind the trace must count: a map (linear in pixels), a view of it, a
    pixel-by-pixel attention (quadratic), an operator with two outputs, a 0-d output, a
    constant-size table and a cast (an operator whose dtype comes in a keyword)."""

    def forward(self, x):
        y = x * 2
        t = y.flatten(2)  # a view: the same storage, not counted again
        attn = t.transpose(1, 2) @ t
        values, indices = attn.max(dim=-1)
        total = attn.sum()
        table = torch.ones(100)
        wide = y.to(torch.float64)
        return values + indices + total + table.sum() + wide.mean()


def test_the_trace_counts_views_once_and_every_output_of_every_operator():
    events, sizes = memory._allocation_trace(_Rich(), torch.zeros(1, 3, 8, 8))
    # y (192 floats), attn (64 x 64), max's values (64 floats) and indices (64 int64), the
    # 0-d sum, the table (100 floats), y as float64; then the sums that form the output
    assert sizes[:7] == [768, 16384, 256, 512, 4, 400, 1536]
    assert len(sizes) == 13 and [kind for kind, _ in events].count('+') == 13
    assert events[:9] == [('+', k) for k in range(9)]


def test_a_storage_freed_and_made_again_at_the_same_address_counts_again():
    """Six additions in a row: the allocator hands a freed buffer out again, and each new
    tensor there is a new storage (two alive at a time)."""

    class Chain(nn.Module):

        def forward(self, x):
            for _ in range(6):
                x = x + 1
            return x

    events, sizes = memory._allocation_trace(Chain(), torch.zeros(1, 3, 32, 32))
    assert [kind for kind, _ in events] == ['+', '+'] + ['-', '+'] * 4 + ['-', '-']
    assert sizes == [12288] * 6
    assert memory.peak_activation_bytes(Chain(), torch.zeros(1, 3, 32, 32)) == 2 * 12288


def test_estimate_fits_constant_linear_and_quadratic_storages():
    for shape in ((20, 20), (33, 17), (9, 40)):
        assert memory.estimate_peak_bytes(_Rich(), shape, probes=(8, 12, 16)) == (
            memory.peak_activation_bytes(_Rich(), torch.zeros(1, 3, *shape))), shape


def test_a_different_path_in_any_probe_falls_back_to_scaling_the_largest():
    """Only the middle probe (12 px) takes the extra step: the fit is not attempted."""

    class Middle(nn.Module):

        def forward(self, x):
            y = x * 2
            return y + 1 if x.shape[-1] == 12 else y

    largest = memory.peak_activation_bytes(Middle(), torch.zeros(1, 3, 16, 16))
    assert largest == 3 * 16 * 16 * 4
    assert memory.estimate_peak_bytes(Middle(), (32, 32), probes=(8, 12, 16)) == largest * 4
