"""Where a deployed detector's time goes: onnxruntime's per-node profile of the detections graph
(vt_mm.deploy.detection), split into the backbone + neck, the heads' layers, RoIAlign, NMS and
the rest of the post-processing (top-k, box decoding, score filter, gathers, padding).

    python benchmarks/detection_profile.py CONFIG [CONFIG ...] [--shape H W] [--threads 2]
        [--runs 5] [--detections 300] [--out-dir DIR]

Random weights, BN trained-like, and the classifiers set so that about ``--detections``
(anchor or proposal, class) pairs pass the score threshold
(``vt_mm.analysis.detection_scores``): a fresh head passes none, which would leave NMS and the
mask head without work. Prints a markdown table: per config the mean ms per run and each
part's share of the summed node times. Runs outside the test suite.
"""
import argparse
import json
import os
import os.path as osp
from collections import defaultdict

import torch

from vt_mm.analysis import build_model, default_shape, trained_like_bn
from vt_mm.analysis.detection_scores import spread_scores
from vt_mm.deploy.onnx import export_onnx

PARTS = ('backbone + neck', 'heads', 'RoIAlign', 'NMS', 'other post-processing')


def part_of(node: str, op: str) -> str:
    """The part a graph node belongs to: by the module it was exported from (``/backbone/...``,
    ``/neck/...``, ``/rpn_head/...``), else by its operator."""
    scope = node.lstrip('/').split('/')
    if len(scope) > 1 and scope[0] in ('backbone', 'neck'):
        return 'backbone + neck'
    if len(scope) > 1 and scope[0].endswith('_head'):
        return 'heads'
    if op == 'RoiAlign':
        return 'RoIAlign'
    if op == 'NonMaxSuppression':
        return 'NMS'
    return 'other post-processing'


def profile(path: str, x, threads: int, runs: int, warmup: int = 2) -> dict:
    """part -> summed kernel microseconds over ``runs`` (after ``warmup``), and 'wall' -> the
    mean wall milliseconds per run."""
    import time

    import onnxruntime as ort
    warm = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for _ in range(warmup):
        warm.run(None, {'input': x})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = osp.splitext(path)[0] + '.profile'
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    session.run(None, {'input': x})  # first run: allocations, not counted below
    start = time.perf_counter()
    for _ in range(runs):
        session.run(None, {'input': x})
    wall = (time.perf_counter() - start) / runs * 1000
    with open(session.end_profiling()) as f:
        events = json.load(f)
    nodes = [e for e in events if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time')]
    # the first run's events come first: count the last `runs` runs only
    per_run = len(nodes) // (runs + 1)
    totals = defaultdict(float)
    for e in nodes[per_run:]:
        totals[part_of(e['name'][:-len('_kernel_time')], e['args'].get('op_name', ''))] += e['dur']
    totals['wall'] = wall
    return totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--detections', type=int, default=300,
                        help='(anchor or proposal, class) pairs above the score threshold')
    parser.add_argument('--out-dir', default='work_dirs/detection_profile')
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    print(f'onnxruntime, {args.threads} threads, {args.runs} runs; shares of the summed node '
          f'times; about {args.detections} pairs above the score threshold\n')
    print('| config | input | ms per run | ' + ' | '.join(PARTS) + ' |')
    print('|---|---|---|' + '---|' * len(PARTS))
    for config in args.configs:
        torch.manual_seed(0)
        model, cfg, toolbox = build_model(config)
        trained_like_bn(model).eval()
        shape = tuple(args.shape or default_shape(cfg, toolbox))
        x = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
        spread_scores(model, x, args.detections)
        stem = osp.splitext(osp.basename(config))[0]
        path = osp.join(args.out_dir, f'{stem}.detections.onnx')
        export_onnx(model, path, shape, dynamic=False, toolbox='mmdet', output='detections')
        totals = profile(path, x.numpy(), args.threads, args.runs)
        summed = sum(totals[p] for p in PARTS)
        shares = ' | '.join(f'{100 * totals[p] / summed:.1f}%' for p in PARTS)
        print(f'| {stem} | {shape[0]}x{shape[1]} | {totals["wall"]:.0f} | {shares} |',
              flush=True)


if __name__ == '__main__':
    main()
