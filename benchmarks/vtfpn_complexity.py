"""Params, FLOPs and CPU latency of FPN vs VT-FPN (neck alone and whole Semantic-FPN model).

    python benchmarks/vtfpn_complexity.py [--size 473] [--runs 10] [--threads 2]
        [--train-size 128] [--train-batch 8] [--necks FPN VT-FPN [FPN-no-3x3 ...]]

FLOPs are mmengine.analysis counts, where one multiply-add is one FLOP: the convention of the VT
paper's "GFLOPs" (FPN module 12.8 vs VT-FPN 2.0 at 473x473 with ResNet-50). Latency is the median
of --runs timed forward passes (batch 1, after warm-up); FPN and VT-FPN are timed alternately in
the same run so machine noise hits both, and the table reports their ratio. A training step
(forward, loss, backward, SGD update; BatchNorm, batch --train-batch at --train-size) is timed
the same way. ``--necks`` adds the trade-off variants of training_parity.py (FPN without its
3x3 output convs, VT-FPN with 3x3 convs on the coarse levels, with a depthwise-separable 3x3
on every output), each the LIP config with only the neck changed, timed in the same
alternation.
"""
import argparse
import os.path as osp
import sys
import tempfile

import torch

from vt_mm.analysis import ImageToOutputs, build_model, count_flops, time_alternately

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def flops(module, inputs) -> int:
    """The benchmark tool's count (baddbmm and fused attention included), BatchNorm included."""
    return count_flops(module, inputs, count_bn=True)[0]


def params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def train_step(model, size: int, batch: int):
    """One SGD training step of a segmentor on random images and labels, as a callable."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(batch, 3, size, size, generator=gen)
    num_classes = model.decode_head.num_classes
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                             ori_shape=(size, size)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, size, size), generator=gen))
        samples.append(sample)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        model.train()
        losses = model.loss(img, samples)
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def neck_config(name: str, directory: str, fpn_config: str, vtfpn_config: str) -> str:
    """A config file: the FPN or VT-FPN LIP config with only the neck of ``name`` changed
    (training_parity.NECKS, the variants' one table)."""
    from training_parity import NECKS, neck_imports
    options = NECKS[name]
    base = vtfpn_config if options['type'] == 'VTFPN' else fpn_config
    if name in ('FPN', 'VT-FPN'):
        return base
    path = osp.join(directory, name.lower().replace('-', '_') + '.py')
    with open(path, 'w') as f:
        f.write(f'_base_ = [{osp.abspath(base)!r}]\nmodel = dict(neck={options!r})\n'
                + neck_imports(name))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--size', type=int, default=473)
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--train-size', type=int, default=128)
    parser.add_argument('--train-batch', type=int, default=8)
    parser.add_argument('--fpn-config',
                        default=osp.join(ROOT, 'configs/vtfpn/fpn_r50_8xb12-40k_lip-473x473.py'))
    parser.add_argument('--vtfpn-config',
                        default=osp.join(ROOT, 'configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py'))
    from training_parity import NECKS  # the same folder
    parser.add_argument('--necks', nargs='+', choices=list(NECKS),
                        default=['FPN', 'VT-FPN'], help='necks to compare (FPN and VT-FPN always)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    names = ['FPN', 'VT-FPN'] + [n for n in args.necks if n not in ('FPN', 'VT-FPN')]
    with tempfile.TemporaryDirectory() as tmp:
        models = {n: build_model(neck_config(n, tmp, args.fpn_config, args.vtfpn_config))[0]
                  for n in names}
    img = torch.randn(1, 3, args.size, args.size)
    with torch.no_grad():
        feats = models['FPN'].backbone(img)
    rows = {}
    for name, m in models.items():
        whole = ImageToOutputs(m)
        rows[name] = dict(
            neck_params=params(m.neck),
            neck_flops=flops(m.neck, feats),
            model_params=params(m),
            model_flops=flops(whole, img))
    print(f'[bench] timing {args.runs} runs each at {args.size}x{args.size}, {args.threads} '
          'threads',
          file=sys.stderr)
    neck_t = time_alternately([lambda m=m: m.neck(feats) for m in models.values()], args.runs, 2,
                              'cpu', 'necks')
    model_t = time_alternately([lambda m=m: m._forward(img) for m in models.values()],
                               max(3, args.runs // 2), 2, 'cpu', 'models')
    train_t = time_alternately([train_step(m, args.train_size, args.train_batch)
                                for m in models.values()], max(3, args.runs // 2), 2, 'cpu',
                               'training steps', grad=True)
    for (name, row), nt, mt, tt in zip(rows.items(), neck_t, model_t, train_t):
        row['neck_ms'], row['model_ms'], row['train_ms'] = nt[0] * 1e3, mt[0] * 1e3, tt[0] * 1e3
        row['neck_spread'] = (nt[1] * 1e3, nt[2] * 1e3)

    print(f'\nSemantic FPN, ResNet-50, {args.size}x{args.size}, batch 1, CPU {args.threads} '
          'threads, '
          f'torch {torch.__version__}\n')
    print('| neck | neck params (M) | neck GFLOPs | neck latency ms (min-max) | model params (M) '
          f'| model GFLOPs | model latency ms | train step ms ({args.train_batch}x'
          f'{args.train_size}x{args.train_size}) |')
    print('|---|---|---|---|---|---|---|---|')
    for name, r in rows.items():
        print(f'| {name} | {r["neck_params"] / 1e6:.2f} | {r["neck_flops"] / 1e9:.2f} | '
              f'{r["neck_ms"]:.1f} ({r["neck_spread"][0]:.1f}-{r["neck_spread"][1]:.1f}) | '
              f'{r["model_params"] / 1e6:.2f} | {r["model_flops"] / 1e9:.2f} | {r["model_ms"]:.1f} '
              f'| {r["train_ms"]:.0f} |')
    f, v = rows['FPN'], rows['VT-FPN']
    print(f'\nFPN / VT-FPN: neck FLOPs {f["neck_flops"] / v["neck_flops"]:.2f}x (paper 6.40x), '
          f'neck latency {f["neck_ms"] / v["neck_ms"]:.2f}x, model FLOPs '
          f'{f["model_flops"] / v["model_flops"]:.2f}x (paper 37.1/26.4 = 1.41x), model latency '
          f'{f["model_ms"] / v["model_ms"]:.2f}x, training step '
          f'{f["train_ms"] / v["train_ms"]:.2f}x')
    return rows


if __name__ == '__main__':
    main()
