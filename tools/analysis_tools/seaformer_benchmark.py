"""CPU latency of SeaFormer T/S/B/L (eager and deploy mode) next to mmseg's mobile baselines.

    python tools/analysis_tools/seaformer_benchmark.py [--size 512 512] [--threads 1 2]
        [--runs 10] [--archs tiny small base large]

Whole segmentors (image -> decode-head logits), batch 1, after warm-up; median (min-max) of
--runs forward passes. Within one thread count every model is timed in alternation in the same
loop, so machine noise hits all of them alike; ratios are against SeaFormer's eager mode
("deploy speed-up") and against mmseg's MobileNetV3-LR-ASPP (mmseg config
mobilenet_v3/mobilenet-v3-d8_lraspp..., the usual mobile baseline). Deploy mode folds every
Conv-BN pair (``vt_mm.deploy.switch_to_deploy``); outputs are checked to stay within 1e-4.
"""
import argparse
import copy
import os.path as osp
import sys

import torch

from vt_mm.analysis import build_model, time_alternately
from vt_mm.deploy import switch_to_deploy

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASELINES = {
    'MobileNetV3-L LR-ASPP (mmseg)':
    'mmseg::mobilenet_v3/mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024.py',
    'MobileNetV2 DeepLabV3+ (mmseg)':
    'mmseg::mobilenet_v2/mobilenet-v2-d8_deeplabv3plus_4xb4-160k_ade20k-512x512.py',
}


def build(config):
    return build_model(config)[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--size', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'))
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--archs', nargs='+', default=['tiny', 'small', 'base', 'large'])
    parser.add_argument('--no-baselines', action='store_true')
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x = torch.randn(1, 3, *args.size)

    models = {}
    for arch in args.archs:
        eager = build(
            osp.join(ROOT, f'configs/seaformer/seaformer-{arch}_8xb4-160k_ade20k-512x512.py'))
        deploy = switch_to_deploy(copy.deepcopy(eager))
        with torch.no_grad():
            diff = (eager._forward(x) - deploy._forward(x)).abs().max().item()
        assert diff < 1e-4, f'deploy mode changed the {arch} output by {diff}'
        models[f'SeaFormer-{arch[0].upper()}'] = eager
        models[f'SeaFormer-{arch[0].upper()} deploy'] = deploy
    if not args.no_baselines:
        for name, config in BASELINES.items():
            models[name] = build(config)

    results = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f'[bench] {threads} thread(s): {len(models)} models x {args.runs} runs',
              file=sys.stderr)
        timings = time_alternately([lambda m=m: m._forward(x) for m in models.values()],
                                   args.runs, 2, 'cpu', f'{threads} thread(s)')
        results[threads] = {name: tuple(t * 1e3 for t in timing)
                            for name, timing in zip(models, timings)}

    print(f'\nSegmentors at {args.size[0]}x{args.size[1]}, batch 1, CPU, torch '
          f'{torch.__version__}; '
          'median (min-max) ms\n')
    header = '| model | params (M) | ' + ' | '.join(
        f'{t} thread{"s" if t > 1 else ""} ms | vs eager | vs LR-ASPP' for t in args.threads) + ' |'
    print(header)
    print('|---|---|' + '---|---|---|' * len(args.threads))
    base = 'MobileNetV3-L LR-ASPP (mmseg)'
    for name, m in models.items():
        params = sum(p.numel() for p in m.parameters()) / 1e6
        cells = []
        for t in args.threads:
            med, lo, hi = results[t][name]
            eager = results[t].get(name.replace(' deploy', ''), (med, ))[0]
            vs_eager = f'{eager / med:.2f}x' if name.endswith('deploy') else ''
            vs_base = f'{results[t][base][0] / med:.2f}x' if base in results[t] else ''
            cells.append(f'{med:.1f} ({lo:.1f}-{hi:.1f}) | {vs_eager} | {vs_base}')
        print(f'| {name} | {params:.2f} | ' + ' | '.join(cells) + ' |')
    return results


if __name__ == '__main__':
    main()
