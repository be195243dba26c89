"""torch.compile for every family: graph breaks, compile time and steady-state step time vs eager.

For one config per family (VT-FPN, SeaFormer-T, PyramidTNT-Ti, VT-ResNet-18, each at a small
input on generated data), the runner trains ``--iters`` iterations through mmengine's
``compile`` switch and, in the same run, eagerly; printed per family and mode:

* ``breaks``: ``torch._dynamo.explain`` graph breaks of the model's loss forward;
* ``first``: the first iteration's time (for ``compile`` the compilation);
* ``step``: the median time of the iterations after the second.

Eager and compiled runs alternate family by family; the two cores are shared with nothing else.
``python tools/analysis_tools/compile_benchmark.py [--families vtfpn seaformer pyramid_tnt
vt_resnet] [--iters 8] [--compile-cfg "dict(backend='inductor')"]``
"""
import argparse
import ast
import os
import os.path as osp
import statistics
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

import vt_mm  # noqa: E402,F401
from vt_mm.engine.compile_check import FAMILY_CONFIGS, count_graph_breaks, write_family_config  # noqa: E402


def _timed_run(cfg_path: str, work_dir: str, iters: int, compile_cfg):
    """Train ``iters`` iterations; returns per-iteration wall times and the runner."""
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    times = []

    class IterTimer(Hook):
        priority = 'VERY_HIGH'

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self._t = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            times.append(time.perf_counter() - self._t)

    cfg = Config.fromfile(cfg_path)
    cfg.work_dir = work_dir
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters + 1
    if compile_cfg is not None:
        cfg.compile = compile_cfg
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.register_hook(IterTimer())
    runner.train()
    return times, runner


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--families', nargs='+', default=list(FAMILY_CONFIGS),
                        choices=list(FAMILY_CONFIGS))
    parser.add_argument('--iters', type=int, default=8)
    parser.add_argument('--compile-cfg', default="dict(backend='inductor')",
                        help="mmengine's compile setting (a Python literal: True or dict(...))")
    args = parser.parse_args(argv)
    compile_cfg = ast.literal_eval(args.compile_cfg) if not args.compile_cfg.startswith(
        'dict(') else eval(args.compile_cfg, {'dict': dict})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            cfg_path = write_family_config(family, osp.join(tmp, family))
            from mmengine.config import Config
            from mmengine.registry import init_default_scope
            cfg = Config.fromfile(cfg_path)
            init_default_scope(cfg.get('default_scope', 'mmseg'))
            breaks, reasons = count_graph_breaks(cfg)
            for reason in reasons:
                print(f'{family}: graph break: {reason}', file=sys.stderr)
            for mode, ccfg in (('eager', None), ('compile', compile_cfg)):
                times, _ = _timed_run(cfg_path, osp.join(tmp, family, mode), args.iters, ccfg)
                rows.append((family, mode, breaks if mode == 'compile' else '-', times[0],
                             statistics.median(times[2:]) if len(times) > 2 else float('nan')))
                print(f'{family} {mode}: first {times[0]:.1f} s, steps '
                      + ' '.join(f'{t:.2f}' for t in times), file=sys.stderr, flush=True)
    eager = {r[0]: r[4] for r in rows if r[1] == 'eager'}
    print(f'compile setting: {compile_cfg!r}; torch {__import__("torch").__version__}; '
          f'{os.cpu_count()} CPUs, {args.iters} iterations')
    print('| family | mode | graph breaks | first iteration (s) | step (s) | step vs eager |')
    print('|---|---|---|---|---|---|')
    for family, mode, breaks, first, step in rows:
        print(f'| {family} | {mode} | {breaks} | {first:.1f} | {step:.3f} | '
              f'{step / eager[family]:.2f}x |')


if __name__ == '__main__':
    main()
