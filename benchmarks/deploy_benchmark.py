"""Latency per family, backend and thread count, every runtime timed alternately with PyTorch
eager and onnxruntime in one run (this machine is noisy: only ratios within a run compare).

    python benchmarks/deploy_benchmark.py [CONFIG ...] [--backend ...]
        [--threads 1 2] [--runs 10] [--shape H W] [--variants logits labels int8 bf16]
        [--calib-config CONFIG] [--out-dir DIR]

Each config is converted once per backend and graph (``--variants``: the logits graph, the
labels graph of segmentors, the detections graph of detectors (its eager column is mmdet's own
``predict``; the classifiers set so that ``--detections`` pairs pass the score threshold), the
INT8 logits graph on backends with INT8, the logits graph run in bf16 on backends and CPUs with
bf16) by ``vt_mm.deploy.pipeline.deploy`` (checked against PyTorch as ``tools/deployment/export.py``
does); then, for each thread count, eager and every runner of every graph are timed in
alternation on the same input. Prints a markdown table with the median milliseconds and ratios
(logits: to onnxruntime; labels and detections: to the backend's logits graph, so that for a
detector the ratio minus one is the share of its heads and post-processing; INT8 and bf16: to
its fp32 graph), and
SeaFormer's ARM figures from the paper (one Snapdragon 865 core, 512x512) beside the SeaFormer
rows. INT8 calibration images come from ``--calib-config``'s training split (default: the
SeaFormer-T demo config; no other config's data is on this machine). The weights are random,
BN trained-like (``vt_mm.analysis.trained_like_bn``): a fresh model's zero-initialised BN gammas
let litert-torch fold whole residual branches away, which timed a smaller network. Runs outside
the test suite.
"""
import argparse
import functools
import os.path as osp
import sys

import torch

from vt_mm.analysis import build_model, default_shape, time_alternately, trained_like_bn
from vt_mm.analysis.detection_scores import spread_scores
from vt_mm.deploy import exportable
from vt_mm.deploy.backends import BACKENDS, running_in
from vt_mm.deploy.calibration import calibration_images
from vt_mm.deploy.detection import unsupported
from vt_mm.deploy.pipeline import deploy, load_runners
from vt_mm.models.wrappers import unscaled_det_samples

DEFAULT_CONFIGS = [
    'configs/seaformer/seaformer-tiny_8xb4-160k_ade20k-512x512.py',
    'configs/seaformer/seaformer-small_8xb4-160k_ade20k-512x512.py',
    'configs/seaformer/seaformer-base_8xb4-160k_ade20k-512x512.py',
    'configs/seaformer/seaformer-large_8xb4-160k_ade20k-512x512.py',
    'configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py',
    'configs/vt_resnet/vt-resnet18_8xb32_in1k.py',
    'configs/vt_resnet/vt-resnet50_8xb32_in1k.py',
    'configs/pyramid_tnt/pyramid-tnt-ti_8xb128_in1k.py',
    'configs/pyramid_tnt/pyramid-tnt-s_8xb128_in1k.py',
]
VARIANTS = ('logits', 'labels', 'detections', 'int8', 'bf16')
# graphs whose cells compare with the same backend's fp32 logits graph and have no eager time
REDUCED = ('int8', 'bf16')
CALIB_CONFIG = 'configs/demo/seaformer-tiny_lip-demo-256x256.py'
# the paper's Table (one Snapdragon 865 core, TFLite, 512x512), FACTS.md
SEAFORMER_ARM_MS = {'tiny': 40, 'small': 67, 'base': 106, 'large': 367}


def mmdet_predict(model, x):
    """mmdet's own prediction of a normalised image (resize factor 1): what the detections
    graph replaces."""
    with torch.no_grad():
        return model.predict(x, unscaled_det_samples(x), rescale=True)


@functools.lru_cache(maxsize=None)
def calibration_for(config: str, shape, num: int):
    """INT8 calibration images: ``config``'s training images (its test pipeline and
    preprocessing; every vt-mm family uses the same ImageNet mean/std) at ``shape``, loaded
    once per shape."""
    model, cfg, _ = build_model(config)
    return calibration_images(cfg, model, shape, num)


def arm_figure(config: str) -> str:
    name = osp.basename(config)
    for variant, ms in SEAFORMER_ARM_MS.items():
        if name.startswith(f'seaformer-{variant}_') and 'in1k' not in name:
            return f'{ms}'
    return ''


def _table_only_on_stdout():
    """Returns the real stdout for the table and sends everything else printed there to stderr:
    mmengine's logger (its handlers keep the ``sys.stdout`` of their creation) wrote "The current
    default scope ... is not ..." between the rows when configs of two toolboxes follow."""
    import logging

    from mmengine.logging import MMLogger
    table, sys.stdout = sys.stdout, sys.stderr
    for logger in MMLogger._instance_dict.values():
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is table:
                handler.setStream(sys.stderr)
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('configs', nargs='*', default=DEFAULT_CONFIGS)
    parser.add_argument('--backend', nargs='+', default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--variants', nargs='+', choices=VARIANTS, default=['logits', 'labels'],
                        help='graphs per config: logits, labels (segmentors), int8 (logits, '
                        'backends with INT8), bf16 (logits, backends and CPUs with bf16)')
    parser.add_argument('--labels-upsample', type=int, nargs='+', default=[1], metavar='K',
                        help='labels graphs: one per bilinear upsampling factor K of the logits '
                        '(tools/deployment/export.py --labels-upsample)')
    parser.add_argument('--calib-config', default=CALIB_CONFIG,
                        help='config whose training images calibrate --variants int8')
    parser.add_argument('--calib-images', type=int, default=16)
    parser.add_argument('--seed', type=int, default=0, help='seed of the random weights')
    parser.add_argument('--detections', type=int, default=300,
                        help='detectors: (anchor or proposal, class) pairs above the score '
                        "threshold on the example (vt_mm.analysis.detection_scores; a fresh "
                        "head passes none, leaving NMS and the mask head without work)")
    parser.add_argument('--out-dir', default='work_dirs/deploy_benchmark')
    args = parser.parse_args(argv)
    table = _table_only_on_stdout()
    row = functools.partial(print, file=table, flush=True)
    backends = ['onnxruntime'] + [b for b in args.backend if b != 'onnxruntime']
    row('Cells: median ms (ratio). logits rows: to onnxruntime logits; labels and detections '
          "rows: to the same backend's logits graph (a detector's: its backbone + neck); int8 "
          "and bf16 rows: to the same backend's fp32 logits graph. "
          'All graphs of a config and thread count timed alternately in one run.\n')
    row('| config | graph | input | threads | eager ms | ' +
          ' | '.join(f'{b} ms' for b in backends) + ' | paper ARM ms (1 core) |')
    row('|---|---|---|---|---|' + '---|' * len(backends) + '---|')
    for config in args.configs:
        torch.manual_seed(args.seed)  # the same random weights in every run
        model, cfg, toolbox = build_model(config)
        trained_like_bn(model).eval()  # no zero gammas for a converter to fold (docstring)
        shape = tuple(args.shape or default_shape(cfg, toolbox))
        stem = osp.splitext(osp.basename(config))[0]
        if toolbox == 'mmdet' and 'detections' in args.variants:
            # on deploy()'s example (its seed 0), which every graph is timed on
            spread_scores(model, torch.randn(1, 3, *shape,
                                             generator=torch.Generator().manual_seed(0)),
                          args.detections)
        variants = []  # (name, output, labels upsampling factor)
        for v in args.variants:
            if v == 'labels':
                if toolbox == 'mmseg':
                    variants += [('labels' if k == 1 else f'labels x{k}', 'labels', k)
                                 for k in args.labels_upsample]
            elif v == 'detections':
                if toolbox == 'mmdet' and unsupported(model) is None:
                    variants.append((v, 'detections', 1))
            else:
                variants.append((v, 'logits', 1))
        graphs = {}  # variant -> (eager net, deploy report)
        for variant, output, upsample in variants:
            calibration, precision = None, 'fp32'
            names = backends
            if variant in REDUCED:
                names, why_not = running_in(variant, backends)
                precision = variant
                for b, why in why_not.items():
                    print(f'[deploy_benchmark] no {variant} cells for {b}: {why}',
                          file=sys.stderr)
                if not names:
                    continue
                if variant == 'int8':
                    calibration = calibration_for(args.calib_config, shape, args.calib_images)
            report = deploy(model, names, shape, osp.join(args.out_dir, stem), stem,
                            toolbox=toolbox, output=output, calibration=calibration, repeats=1,
                            labels_upsample=upsample, precision=precision)
            ops = ', '.join(f'{op} {n}' for op, n in report.op_counts.items())
            print(f'[deploy_benchmark] {stem} {variant} ONNX ops: {ops}', file=sys.stderr)
            for r in report.results:  # the check against PyTorch, failed or not
                print(f'[deploy_benchmark] {stem} {variant}: {r.line()}', file=sys.stderr)
            options = dict(logits_upsample=upsample) if output == 'labels' else {}
            net = exportable(model, toolbox, output, **options).eval()
            if output == 'detections':  # eager: mmdet's own prediction, not vt-mm's graph
                net = functools.partial(mmdet_predict, model)
            graphs[variant] = (net, report)
        # every graph ran on the same input (deploy's fixed seed)
        example = next(iter(graphs.values()))[1].example
        x = torch.from_numpy(example)
        for threads in args.threads:
            torch.set_num_threads(threads)
            keys, fns = [], []
            for variant, (net, report) in graphs.items():
                if variant not in REDUCED:  # eager INT8 / bf16 is not what a runtime runs
                    keys.append((variant, 'eager'))
                    fns.append(lambda net=net: net(x))
                for backend, run in load_runners(report, threads).items():
                    keys.append((variant, backend))
                    fns.append(lambda run=run: run(example))
            times = time_alternately(fns, args.runs, args.warmup, 'cpu', label=stem)
            ms = {key: 1000 * t[0] for key, t in zip(keys, times)}
            for variant, (_, report) in graphs.items():
                tried = [r.backend for r in report.results]
                cells = []
                for b in backends:
                    if (variant, b) not in ms:
                        cells.append('failed' if b in tried else '')
                        continue
                    base = ms.get(('logits', 'onnxruntime' if variant == 'logits' else b))
                    ratio = f' ({ms[(variant, b)] / base:.2f}x)' if base else ''
                    cells.append(f'{ms[(variant, b)]:.1f}{ratio}')
                eager = ms.get((variant, 'eager'))
                row(f'| {stem} | {variant} | {shape[0]}x{shape[1]} | {threads} | '
                      f'{"" if eager is None else f"{eager:.1f}"} | ' + ' | '.join(cells) +
                      f' | {arm_figure(config) if variant == "logits" else ""} |')


if __name__ == '__main__':
    main()
