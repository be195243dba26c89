"""torch.compile for every family: graph breaks, compile time and steady-state step time vs eager.

For one config per family (VT-FPN, SeaFormer-T, PyramidTNT-Ti, VT-ResNet-18 on generated data,
``--batch`` crops of ``--size``), the runner trains ``--iters`` iterations through mmengine's
``compile`` switch (which vt-mm's NetworkCompileHook applies to the networks) and, in the same
run, eagerly; printed per family and mode:

* ``breaks``: ``torch._dynamo.explain`` graph breaks of the model (backbone, neck, head);
* ``first``: the first iteration's time (for ``compile`` the compilation);
* ``step``: the median time of the iterations after the second;
* ``graphs``: graphs Dynamo compiled during the run (recompilations included).

``--train-step-families`` (default: ``mmseg_fpn``, mmseg's own Semantic FPN on the same data)
adds a third mode, ``train_step``: mmengine's own compile of the whole train step, with
NetworkCompileHook taken out of the config, to show what the hook avoids.

Eager and compiled runs alternate family by family; the two cores are shared with nothing else.
``python benchmarks/compile_benchmark.py [--families vtfpn seaformer pyramid_tnt
vt_resnet] [--iters 8] [--size 128] [--batch 4] [--compile-cfg "dict(backend='inductor')"]``
"""
import argparse
import copy
import os
import os.path as osp
import statistics
import sys
import tempfile
import time

from mmengine.config import Config
from mmengine.registry import init_default_scope

import vt_mm  # noqa: F401
from tests.helpers.compile_configs import (  # the compile checks' configs are the tests'
    FAMILY_CONFIGS,
    REFERENCE_CONFIGS,
    count_graph_breaks,
    write_family_config,
)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _timed_run(cfg: Config, work_dir: str, iters: int, compile_cfg, train_step=False):
    """Train ``iters`` iterations of a copy of ``cfg``; returns per-iteration wall times and
    the number of graphs Dynamo compiled."""
    import torch._dynamo as dynamo
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    times = []

    class IterTimer(Hook):
        priority = 'VERY_HIGH'

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self._t = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            times.append(time.perf_counter() - self._t)

    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters + 1
    if compile_cfg is not None:
        cfg.compile = compile_cfg
    if train_step:  # mmengine's own compile of the whole step
        cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] != 'NetworkCompileHook']
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.register_hook(IterTimer())
    dynamo.reset()
    dynamo.utils.counters.clear()
    runner.train()
    graphs = dynamo.utils.counters['stats']['unique_graphs']
    dynamo.reset()
    return times, graphs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--families', nargs='+', default=list(FAMILY_CONFIGS),
                        choices=list(FAMILY_CONFIGS) + list(REFERENCE_CONFIGS))
    parser.add_argument('--train-step-families', nargs='*', default=list(REFERENCE_CONFIGS),
                        choices=list(FAMILY_CONFIGS) + list(REFERENCE_CONFIGS))
    parser.add_argument('--iters', type=int, default=8)
    parser.add_argument('--size', type=int, default=128, help='training crop size')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--compile-cfg', default="dict(backend='inductor')",
                        help="mmengine's compile setting (a Python literal: True or dict(...))")
    args = parser.parse_args(argv)
    compile_cfg = eval(args.compile_cfg, {'dict': dict, 'True': True})  # True or dict(...)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        families = args.families + [f for f in args.train_step_families
                                    if f not in args.families]
        for family in families:
            cfg = Config.fromfile(
                write_family_config(family, osp.join(tmp, family), args.size, args.batch))
            init_default_scope(cfg.get('default_scope', 'mmseg'))
            breaks, reasons = count_graph_breaks(cfg)
            for reason in reasons:
                print(f'{family}: graph break: {reason}', file=sys.stderr)
            modes = [('eager', None)]
            if family in args.families:
                modes.append(('compile', compile_cfg))
            if family in args.train_step_families:
                modes.append(('train_step', compile_cfg))
            for mode, ccfg in modes:
                times, graphs = _timed_run(cfg, osp.join(tmp, family, mode), args.iters, ccfg,
                                           train_step=mode == 'train_step')
                rows.append((family, mode, '-' if mode == 'eager' else breaks, graphs,
                             times[0],
                             statistics.median(times[2:]) if len(times) > 2 else float('nan')))
                print(f'{family} {mode}: first {times[0]:.1f} s, steps '
                      + ' '.join(f'{t:.2f}' for t in times), file=sys.stderr, flush=True)
    eager = {r[0]: r[5] for r in rows if r[1] == 'eager'}
    print(f'compile setting: {compile_cfg!r}; torch {__import__("torch").__version__}; '
          f'{os.cpu_count()} CPUs, {args.iters} iterations of batch {args.batch} at '
          f'{args.size}x{args.size}')
    print('| family | mode | model graph breaks | graphs compiled | first iteration (s) | '
          'step (s) | step vs eager |')
    print('|---|---|---|---|---|---|---|')
    for family, mode, breaks, graphs, first, step in rows:
        print(f'| {family} | {mode} | {breaks} | {graphs} | {first:.1f} | {step:.3f} | '
              f'{step / eager[family]:.2f}x |')


if __name__ == '__main__':
    main()
