"""TraceableGELU: exact GELU eagerly and when traced."""
import torch
import torch.nn.functional as F

from vt_mm.models.layers import TraceableGELU


def test_traceable_gelu_is_exact_gelu_eagerly_and_when_traced():
    x = torch.linspace(-12, 12, 241)
    gelu = TraceableGELU()
    assert torch.equal(gelu(x), F.gelu(x))
    traced = torch.jit.trace(gelu, x)
    graph = str(traced.graph)
    assert 'erf' in graph and 'gelu' not in graph
    assert torch.allclose(traced(x), F.gelu(x), atol=1e-6)
    tanh = TraceableGELU(approximate='tanh')
    traced_tanh = torch.jit.trace(tanh, x)
    assert 'gelu' in str(traced_tanh.graph)
    assert torch.equal(tanh(x), F.gelu(x, approximate='tanh'))
