"""What fp16 storage and arithmetic cost each family: the phones' default in ncnn and MNN.

    python benchmarks/fp16_cost.py [--checkpoint CONFIG=CKPT ...] [--images 8]

ncnn (``use_fp16_storage`` / ``use_fp16_arithmetic``, on by default) and MNN (``precision``
'normal' / 'low') compute in fp16 on ARMv8.2 cores; their x86 builds ignore those options, so the
runtimes' fp16 modes cannot run here. This script runs the same network in PyTorch with fp16
weights and activations (``model.half()`` on the CPU) against fp32, on the same inputs: the
images of the config's validation split through its test pipeline when a checkpoint is given,
random normalised images otherwise. It prints, per config, the largest difference of the
outputs, the largest output, and how often the arg-max agrees (pixels of the logits for
segmentors, top-1 for classifiers). PyTorch accumulates fp16 products in fp32 on the CPU; a
runtime that also accumulates in fp16 can be further off, so these are lower bounds of what a
phone's fp16 mode costs.
"""
import argparse
import copy

import numpy as np
import torch

from vt_mm.analysis import ImageToOutputs, build_model, default_shape, trained_like_bn

CONFIGS = [
    'vt_mm::seaformer/seaformer-tiny_8xb4-160k_ade20k-512x512.py',
    'vt_mm::vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py',
    'vt_mm::vt_resnet/vt-resnet18_8xb32_in1k.py',
    'vt_mm::pyramid_tnt/pyramid-tnt-ti_8xb128_in1k.py',
]


def inputs_of(cfg, toolbox: str, shape, images: int, trained: bool):
    """Normalised inputs: the validation split's images (trained models), else random ones."""
    if not trained:
        torch.manual_seed(0)
        return [torch.randn(1, 3, *shape) for _ in range(images)]
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope(toolbox)
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    return [dataset[i]['inputs'][None].float() for i in range(min(images, len(dataset)))]


def fp16_cost(config: str, checkpoint=None, images: int = 8):
    model, cfg, toolbox = build_model(config)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    else:
        torch.manual_seed(0)
        trained_like_bn(model)
    shape = default_shape(cfg, toolbox)
    net32 = ImageToOutputs(model, toolbox).eval()
    net16 = copy.deepcopy(net32).half()
    diff = peak = 0.0
    agree = []
    with torch.no_grad():
        for x in inputs_of(cfg, toolbox, shape, images, bool(checkpoint)):
            if checkpoint:  # the data preprocessor's normalisation, as the graph's input
                x = model.data_preprocessor({'inputs': [x[0]], 'data_samples': None})['inputs']
            ref = net32(x)
            got = net16(x.half()).float()
            ref, got = (t[0] if isinstance(t, (list, tuple)) else t for t in (ref, got))
            diff = max(diff, (got - ref).abs().max().item())
            peak = max(peak, ref.abs().max().item())
            agree.append((got.argmax(1) == ref.argmax(1)).float().mean().item())
    return dict(config=config.split('/')[-1], trained=bool(checkpoint), max_abs_diff=diff,
                max_abs_output=peak, agreement=float(np.mean(agree)), inputs=len(agree))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('configs', nargs='*', default=CONFIGS)
    parser.add_argument('--checkpoint', nargs='*', default=[], metavar='CONFIG=CKPT',
                        help='a trained checkpoint for a config: its validation images are used')
    parser.add_argument('--images', type=int, default=8)
    args = parser.parse_args(argv)
    checkpoints = dict(item.split('=', 1) for item in args.checkpoint)
    rows = [fp16_cost(c, checkpoints.get(c), args.images) for c in args.configs]
    print('| config | weights | inputs | max abs diff fp16 vs fp32 | max abs output | '
          'arg-max agreement |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['config']} | {'trained' if r['trained'] else 'random'} | {r['inputs']} | "
              f"{r['max_abs_diff']:.2e} | {r['max_abs_output']:.2f} | "
              f"{100 * r['agreement']:.2f}% |")
    return rows


if __name__ == '__main__':
    main()
