"""Params, FLOPs and CPU latency of PyramidTNT Ti/S/M/B (backbone only).

    python tools/analysis_tools/pyramid_tnt_benchmark.py [--archs ti s m b] [--runs 5]
        [--det-runs 2] [--threads 2] [--no-det]

At the native size (Ti 192, S/M/B 256) and at 800x1333 (a detection input). FLOPs are
mmengine.analysis counts (one multiply-add = one FLOP, the paper's GMACs) taken on the explicit
attention path, because the counter does not see inside the fused attention op. Latency: median of
--runs forward passes at batch 1 after warm-up, for vt-mm's fused attention and for the explicit
softmax(q k^T + bias) v path that computes op for op what the official code does (the speed
baseline); both timed alternately in the same run, reported as a ratio. Outputs of both paths are
compared too.
"""
import argparse
import statistics
import sys
import time

import torch

from vt_mm.analysis import flop_analyzer
from vt_mm.models.backbones import PyramidTNT

PAPER = {'ti': (10.58, 0.59), 's': (31.95, 3.28), 'm': (84.94, 8.20), 'b': (156.99, 15.97)}


def timed(model, x, runs, warmup=1):
    out = {}
    with torch.no_grad():
        for fused in (True, False) * warmup:
            model.set_fused_attn(fused)
            model(x)
        times = {True: [], False: []}
        for _ in range(runs):
            for fused in (True, False):
                model.set_fused_attn(fused)
                t0 = time.perf_counter()
                out[fused] = model(x)
                times[fused].append(time.perf_counter() - t0)
    diff = max((a - b).abs().max().item() for a, b in zip(out[True], out[False]))
    return statistics.median(times[True]), statistics.median(times[False]), diff


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--archs', nargs='+', default=['ti', 's', 'm', 'b'])
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--det-runs', type=int, default=2)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--no-det', action='store_true', help='skip 800x1333')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for arch in args.archs:
        model = PyramidTNT(arch).eval()
        model.init_weights()
        native = model.img_size
        sizes = [native] + ([] if args.no_det else [(800, 1333)])
        params = sum(p.numel() for p in model.parameters()) + model.num_features * 1000 + 1000
        for hw in sizes:
            print(f'[bench] {arch} at {hw[0]}x{hw[1]}', file=sys.stderr, flush=True)
            x = torch.randn(1, 3, *hw)
            model.set_fused_attn(False)
            with torch.no_grad():
                flops = flop_analyzer(model, (x, )).total()
            runs = args.runs if hw == native else args.det_runs
            fused_t, eager_t, diff = timed(model, x, runs)
            rows.append((arch, hw, params, flops, fused_t, eager_t, diff))

    print(f'\nPyramidTNT backbone, batch 1, CPU {args.threads} threads, torch '
          f'{torch.__version__}\n')
    print('| arch | input | params (M, with head) | paper params | GFLOPs | paper GMACs | '
          'fused ms | official-path ms | speed-up | max abs diff |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for arch, hw, params, flops, f, e, diff in rows:
        paper_p, paper_f = PAPER[arch]
        native = hw[0] == hw[1]
        print(f'| {arch.upper()} | {hw[0]}x{hw[1]} | {params / 1e6:.2f} | '
              f'{paper_p if native else "-"} | '
              f'{flops / 1e9:.2f} | {paper_f if native else "-"} | {f * 1e3:.1f} | {e * 1e3:.1f} | '
              f'{e / f:.2f}x | {diff:.1e} |')
    return rows


if __name__ == '__main__':
    main()
