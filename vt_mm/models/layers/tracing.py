"""Whether the model is being traced, for the shape-dependent fast paths of every family."""
import torch


def tracing() -> bool:
    """True while the model is traced (ONNX export, ``torch.jit.trace``): shape-dependent fast
    paths, which would bake the example's sizes into the graph, step aside then."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
