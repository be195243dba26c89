"""Static INT8 quantization shared by the backends that run a QDQ ONNX graph (onnxruntime and
OpenVINO): one calibration path, the graph made once per conversion job.

On an x86 CPU without VNNI, onnxruntime's u8s8 kernels (AVX2 / AVX-512 ``vpmaddubsw``) add
pairs of int8 x uint8 products in int16, which saturates with full-range 8-bit weights (measured
on SeaFormer-T: INT8 logits 80% of the peak off, cosine 0.89, where a VNNI CPU gave 23-29%).
Weights are then quantized to 7 bits (onnxruntime's ``reduce_range``, its documented remedy for
non-VNNI machines); with VNNI, and on ARM, the full 8 bits. The choice is made on the exporting
machine, which is where vt-mm measures the graph.
"""
from typing import Dict

__all__ = ['quantize_qdq', 'matmul_output_channel_axes', 'x86_without_vnni']


def x86_without_vnni(cpuinfo: str = '/proc/cpuinfo') -> bool:
    """Whether this is an x86 CPU whose int8 dot products saturate (no ``avx512_vnni`` or
    ``avx_vnni`` flag); False where the flags cannot be read or the CPU is not x86."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(':', 1)[1].split() for line in f
                          if line.startswith('flags')), None)
    except OSError:
        return False
    if flags is None or 'sse2' not in flags:
        return False
    return not ({'avx512_vnni', 'avx_vnni'} & set(flags))


def quantize_qdq(job) -> str:
    """``job``'s ONNX graph quantized statically (QDQ: per-channel int8 weights, uint8
    activations) on ``job.calibration``; returns the path of ``NAME.int8.onnx``. Weights get 7
    bits on x86 without VNNI (:func:`x86_without_vnni`); constant operands of MatMul along the
    product's output channels (:func:`matmul_output_channel_axes`). OpenVINO runs the same
    file: it is made once per job (``job.shared_files['qdq']``), not once per backend."""
    if 'qdq' in job.shared_files:
        return job.shared_files['qdq']
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):

        def __init__(self, images):
            self.images = iter(images)

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {'input': image}

    prepared = job.path('.prep.onnx')
    quant_pre_process(job.onnx_path, prepared, skip_symbolic_shape=True)
    path = job.path('.int8.onnx')
    quantize_static(prepared, path, Images(job.calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, reduce_range=x86_without_vnni(),
                    extra_options={'TensorQuantOverrides': matmul_output_channel_axes(prepared)})
    job.shared_files['qdq'] = path
    return path


def matmul_output_channel_axes(onnx_path: str) -> Dict[str, list]:
    """onnxruntime ``TensorQuantOverrides`` for the constant operands of MatMul, so that every
    weight scale lies along the product's output channels, where OpenVINO's CPU plugin can fold
    it. onnxruntime's quantizer takes axis 1 of every MatMul constant, the output channel only
    for a 2-D right operand; for a 2-D left operand (``A @ x``: VT-ResNet's tokenizer,
    transformer and position-encoding products) and a batched right operand (VT-ResNet-18's
    (4, 64, 64)) it is the reduction axis. onnxruntime runs that, but OpenVINO 2026.4 fails to
    compile the graph (``Check 'any_of(scale.size(), OC, 1U)' failed``: VT-ResNet-18 / 50 and
    VT-FPN, depending on the weights). So:

    - a right operand (``x @ W``): per column, its last axis;
    - a 2-D left operand: per row (OpenVINO runs it as a fully connected layer on the
      transposed product, whose output channels are those rows);
    - a batched (3-D and up) left operand (VT-FPN's grouped tokenizer and transformer weights):
      per tensor; OpenVINO's batched MatMul takes scales only along the output's last axis,
      the columns of ``x``;
    - a constant that plays two of these roles keeps the per-tensor one.
    """
    import onnx
    graph = onnx.load(onnx_path, load_external_data=False).graph
    ranks = {i.name: len(i.dims) for i in graph.initializer}
    choices: Dict[str, set] = {}
    for node in graph.node:
        if node.op_type != 'MatMul':
            continue
        for position, name in enumerate(node.input[:2]):
            rank = ranks.get(name, 0)
            if rank < 2:
                continue
            if position == 1:
                choice = rank - 1
            else:
                choice = rank - 2 if rank == 2 else None  # None: per tensor
            choices.setdefault(name, set()).add(choice)
    overrides = {}
    for name, axes in choices.items():
        axis = axes.pop() if len(axes) == 1 else None
        overrides[name] = [{}] if axis is None else [{'axis': axis}]  # [{}]: per tensor
    return overrides
