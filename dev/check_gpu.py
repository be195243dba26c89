"""Every family's forward and backward on a GPU (fp32 and bf16 autocast) against the CPU.

    python dev/check_gpu.py [--device cuda] [--families ...] [--runs 20] [--size S]

For VT-FPN (Semantic FPN, ResNet-50), SeaFormer-T/B (segmentors), PyramidTNT-Ti/S and
VT-ResNet-18/50 (classifiers), with the same random weights and input on the CPU and on the
device, in training mode with BatchNorm in eval (so that both see the same statistics) and
dropout / stochastic depth off:

* ``fp32``: max |device - CPU| of the outputs over the largest CPU output, and the parameter
  gradients' (of ``sum(mean(out^2))``) difference norm over their norm (TF32 off);
* ``bf16``: the same under ``torch.autocast('cuda', dtype=torch.bfloat16)``; bf16 keeps 8 bits
  of mantissa, so ~1e-2 is expected;
* latency: median forward and forward + backward at fp32 and bf16.

Prints one table; exit status 1 when an fp32 difference exceeds ``--fp32-tol`` (1e-4) or a bf16
one ``--bf16-tol`` (1e-1). Without a GPU it says so and exits 2; ``--device cpu`` runs the same
comparisons CPU against CPU (what the test suite does, to keep the script working).
"""
import argparse
import os.path as osp
import sys

import torch

import vt_mm  # noqa: F401
from vt_mm.analysis import time_alternately

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# family: (config under configs/, input size)
FAMILIES = {
    'vtfpn': ('vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py', 224),
    'seaformer-t': ('seaformer/seaformer-tiny_8xb4-160k_ade20k-512x512.py', 256),
    'seaformer-b': ('seaformer/seaformer-base_8xb4-160k_ade20k-512x512.py', 256),
    'pyramid-tnt-ti': ('pyramid_tnt/pyramid-tnt-ti_8xb128_in1k.py', 192),
    'pyramid-tnt-s': ('pyramid_tnt/pyramid-tnt-s_8xb128_in1k.py', 224),
    'vt-resnet18': ('vt_resnet/vt-resnet18_8xb32_in1k.py', 224),
    'vt-resnet50': ('vt_resnet/vt-resnet50_8xb32_in1k.py', 224),
}


def build(config: str):
    """The config's model with random weights, as a function of the image only."""
    from vt_mm.analysis import ImageToOutputs, build_model
    model, _, toolbox = build_model(osp.join(ROOT, 'configs', config))
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()  # the same statistics on both devices
        if hasattr(m, 'drop_prob'):
            m.drop_prob = 0.0
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return ImageToOutputs(model, toolbox)


def train_step(model, x, autocast: bool):
    """Forward and backward of ``sum(mean(out^2))``; returns the outputs."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        outs = model(x)
    outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
    sum(o.float().square().mean() for o in outs).backward()
    return outs


def forward_backward(model, x, autocast: bool):
    """(outputs, all parameter gradients flattened) of :func:`train_step`, on the CPU."""
    outs = train_step(model, x, autocast)
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters()
                       if p.grad is not None])
    return [o.detach().float().cpu() for o in outs], grads.cpu()


def differences(result, reference):
    """Largest output difference over the largest output value, and the parameter gradients'
    difference norm over their norm (what an optimizer step sees)."""
    (outs, grads), (ref_outs, ref_grads) = result, reference
    out = max(float((o - r).abs().max()) / max(float(r.abs().max()), 1e-12)
              for o, r in zip(outs, ref_outs))
    return out, float((grads - ref_grads).norm() / ref_grads.norm().clamp_min(1e-12))


def check(family, device, runs, size=None):
    import copy
    config, native = FAMILIES[family]
    size = size or native
    torch.manual_seed(0)
    cpu_model = build(config)
    dev_model = copy.deepcopy(cpu_model).to(device)
    x = torch.randn(2, 3, size, size)
    reference = forward_backward(cpu_model, x, autocast=False)
    xd = x.to(device)
    row = dict(family=family, size=size)
    for precision, autocast in (('fp32', False), ('bf16', True)):
        if autocast and device == 'cpu':  # CPU bf16 against CPU fp32
            row[precision] = differences(forward_backward(cpu_model, x, True), reference)
        else:
            row[precision] = differences(forward_backward(dev_model, xd, autocast), reference)

        def fwd():
            with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16,
                                                 enabled=autocast):
                dev_model(xd)

        # grad on for both: the forward turns it off itself
        (fwd_s, _, _), (train_s, _, _) = time_alternately(
            [fwd, lambda: train_step(dev_model, xd, autocast)], runs, 1, device, family,
            grad=True)
        row[f'{precision}_fwd_ms'], row[f'{precision}_train_ms'] = fwd_s * 1000, train_s * 1000
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--families', nargs='+', default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--size', type=int, default=None,
                        help='input size for every family (default: 192-256, per family)')
    parser.add_argument('--fp32-tol', type=float, default=1e-4)
    parser.add_argument('--bf16-tol', type=float, default=1e-1)
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('check_gpu: no CUDA device here (torch.cuda.is_available() is False); run it on '
              'a GPU machine, or with --device cpu to check the script itself')
        return 2
    if args.device == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        name = torch.cuda.get_device_name()
    else:
        name = 'CPU'
    print(f'check_gpu: {name}, torch {torch.__version__}, batch 2, forward + backward vs CPU fp32')
    print('| family | input | fp32 out diff | fp32 grad diff | bf16 out diff | bf16 grad diff | '
          'fp32 fwd (ms) | fp32 fwd+bwd (ms) | bf16 fwd (ms) | bf16 fwd+bwd (ms) |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    failed = []
    for family in args.families:
        row = check(family, args.device, args.runs, args.size)
        print(f"| {family} | {row['size']} | {row['fp32'][0]:.1e} | {row['fp32'][1]:.1e} | "
              f"{row['bf16'][0]:.1e} | {row['bf16'][1]:.1e} | "
              f"{row['fp32_fwd_ms']:.1f} | {row['fp32_train_ms']:.1f} | "
              f"{row['bf16_fwd_ms']:.1f} | {row['bf16_train_ms']:.1f} |", flush=True)
        if max(row['fp32']) > args.fp32_tol or max(row['bf16']) > args.bf16_tol:
            failed.append(family)
    if failed:
        print(f'check_gpu: outside the tolerances: {", ".join(failed)}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
