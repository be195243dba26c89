"""Latency per family, backend and thread count, every runtime timed alternately with PyTorch
eager and onnxruntime in one run (this machine is noisy: only ratios within a run compare).

    python tools/analysis_tools/deploy_benchmark.py [CONFIG ...] [--backend ...]
        [--threads 1 2] [--runs 10] [--shape H W] [--output logits|labels] [--out-dir DIR]

Each config is converted once per backend by ``vt_mm.deploy.pipeline.deploy`` (checked against
PyTorch as ``tools/deployment/export.py`` does); then, for each thread count, eager and every
backend's runner are timed in alternation on the same input. Prints a markdown table with the
median milliseconds, each backend's ratio to onnxruntime, and SeaFormer's ARM figures from the
paper (one Snapdragon 865 core, 512x512) beside the SeaFormer rows. Runs outside the test suite.
"""
import argparse
import os.path as osp
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import torch  # noqa: E402

from vt_mm.analysis import build_model, default_shape, time_alternately  # noqa: E402
from vt_mm.deploy import exportable  # noqa: E402
from vt_mm.deploy.backends import BACKENDS, get_backend  # noqa: E402
from vt_mm.deploy.pipeline import deploy  # noqa: E402

DEFAULT_CONFIGS = [
    'configs/seaformer/seaformer-tiny_8xb4-160k_ade20k-512x512.py',
    'configs/seaformer/seaformer-small_8xb4-160k_ade20k-512x512.py',
    'configs/seaformer/seaformer-base_8xb4-160k_ade20k-512x512.py',
    'configs/seaformer/seaformer-large_8xb4-160k_ade20k-512x512.py',
    'configs/vtfpn_lip.py',
    'configs/vt_resnet/vt-resnet18_8xb32_in1k.py',
    'configs/vt_resnet/vt-resnet50_8xb32_in1k.py',
    'configs/pyramid_tnt/pyramid-tnt-ti_8xb128_in1k.py',
    'configs/pyramid_tnt/pyramid-tnt-s_8xb128_in1k.py',
]
# the paper's Table (one Snapdragon 865 core, TFLite, 512x512), FACTS.md
SEAFORMER_ARM_MS = {'tiny': 40, 'small': 67, 'base': 106, 'large': 367}


def arm_figure(config: str) -> str:
    name = osp.basename(config)
    for variant, ms in SEAFORMER_ARM_MS.items():
        if name.startswith(f'seaformer-{variant}_') and 'in1k' not in name:
            return f'{ms}'
    return ''


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('configs', nargs='*', default=DEFAULT_CONFIGS)
    parser.add_argument('--backend', nargs='+', default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--output', choices=['logits', 'labels'], default='logits')
    parser.add_argument('--out-dir', default='work_dirs/deploy_benchmark')
    args = parser.parse_args(argv)
    backends = ['onnxruntime'] + [b for b in args.backend if b != 'onnxruntime']
    print('| config | input | threads | eager ms | ' +
          ' | '.join(f'{b} ms (x ort)' for b in backends) + ' | paper ARM ms (1 core) |')
    print('|---|---|---|---|' + '---|' * len(backends) + '---|')
    for config in args.configs:
        model, cfg, toolbox = build_model(config)
        model.eval()
        shape = tuple(args.shape or default_shape(cfg, toolbox))
        stem = osp.splitext(osp.basename(config))[0]
        report = deploy(model, backends, shape, osp.join(args.out_dir, stem), stem,
                        toolbox=toolbox, output=args.output, repeats=1)
        for r in report['results']:
            if not r.ok:
                print(f'[deploy_benchmark] {stem}: {r.line()}', file=sys.stderr)
        ok = [r for r in report['results'] if r.ok]
        # eager runs the same network on the same input as the backends
        net = report['jobs']['onnxruntime'].net if 'onnxruntime' in report['jobs'] else \
            exportable(model, toolbox, args.output).eval()
        example = report['jobs'][ok[0].backend].example if ok else \
            torch.randn(1, 3, *shape).numpy()
        x = torch.from_numpy(example)
        for threads in args.threads:
            torch.set_num_threads(threads)
            runners = []
            for r in ok:
                job = report['jobs'][r.backend]
                runners.append(get_backend(r.backend).load(r.files, job, num_threads=threads))
            fns = [lambda: net(x)] + [lambda run=run: run(example) for run in runners]
            times = time_alternately(fns, args.runs, args.warmup, 'cpu', label=stem)
            ms = {'eager': 1000 * times[0][0]}
            ms.update({r.backend: 1000 * t[0] for r, t in zip(ok, times[1:])})
            ort = ms.get('onnxruntime')
            cells = []
            for b in backends:
                if b not in ms:
                    cells.append('failed')
                elif ort:
                    cells.append(f'{ms[b]:.1f} ({ms[b] / ort:.2f}x)')
                else:
                    cells.append(f'{ms[b]:.1f}')
            print(f'| {stem} | {shape[0]}x{shape[1]} | {threads} | {ms["eager"]:.1f} | ' +
                  ' | '.join(cells) + f' | {arm_figure(config)} |', flush=True)


if __name__ == '__main__':
    main()
