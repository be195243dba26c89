"""tracing(): true only while a model is traced."""
import torch

from vt_mm.models.layers import tracing


def test_tracing_is_true_only_while_tracing():
    assert tracing() is False
    seen = []

    def fn(x):
        seen.append(tracing())
        return x + 1

    torch.jit.trace(fn, torch.zeros(1), check_trace=False)
    assert seen == [True]
    assert tracing() is False
