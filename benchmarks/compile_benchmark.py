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

``--sizes H W H W ...`` measures input sizes that change instead (what whole-image validation
and multi-scale training do): the model's networks are compiled as NetworkCompileHook compiles
them (``vt_mm.engine.hooks.compile_networks``), with symbolic sizes (``dynamic``, the hook's
default) and statically, and one training forward/backward runs at each size in turn; printed
per family and mode: the first call's time at each size (a compilation where there is one) and
the step time at the last size against eager, eager and compiled calls alternating.
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

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _compile_configs():
    """tests/helpers/compile_configs.py, loaded from its file: the compile checks' configs are the
    tests' (``import tests...`` would find the ``tests`` package that mmsegmentation and
    model-index install into site-packages)."""
    import importlib.util
    path = osp.join(ROOT, 'tests', 'helpers', 'compile_configs.py')
    spec = importlib.util.spec_from_file_location('vt_mm_compile_configs', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_configs = _compile_configs()
FAMILY_CONFIGS, REFERENCE_CONFIGS = _configs.FAMILY_CONFIGS, _configs.REFERENCE_CONFIGS
count_graph_breaks, write_family_config = _configs.count_graph_breaks, _configs.write_family_config


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


def _new_size_rows(family: str, cfg: Config, sizes, batch: int, compile_cfg, repeats=5):
    """First-call times at each of ``sizes`` for the family's networks compiled with symbolic
    and with static sizes, and the step time at the last size against eager."""
    import torch
    import torch._dynamo as dynamo
    from mmengine.registry import MODELS

    from vt_mm.engine.hooks import compile_networks
    from vt_mm.utils.timing import time_alternately

    rows = []
    for dynamic in (True, False):
        torch.manual_seed(0)
        eager = MODELS.build(cfg.model).train()
        compiled = copy.deepcopy(eager)
        dynamo.reset()
        options = dict(compile_cfg if isinstance(compile_cfg, dict) else {}, dynamic=dynamic)
        compile_networks(compiled, options)

        def step(model, size):
            out = model(torch.randn(batch, 3, *size), mode='tensor')
            outs = [out] if isinstance(out, torch.Tensor) else list(out)
            sum(o.float().square().mean() for o in outs).backward()

        firsts = []
        for size in sizes:
            start = time.perf_counter()
            step(compiled, size)
            firsts.append(time.perf_counter() - start)
            print(f'{family} dynamic={dynamic} {size}: first call {firsts[-1]:.1f} s',
                  file=sys.stderr, flush=True)
        (eager_s, _, _), (compiled_s, _, _) = time_alternately(
            [lambda: step(eager, sizes[-1]), lambda: step(compiled, sizes[-1])], runs=repeats,
            warmup=1, device='cpu', label=family, grad=True)
        rows.append((family, 'dynamic' if dynamic else 'static', firsts, compiled_s / eager_s))
        dynamo.reset()
    return rows


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
    parser.add_argument('--sizes', nargs='+', type=int, metavar='H W',
                        help='measure these input sizes in turn (pairs H W) instead of training')
    args = parser.parse_args(argv)
    compile_cfg = eval(args.compile_cfg, {'dict': dict, 'True': True})  # True or dict(...)
    if args.sizes:
        return _main_sizes(args, compile_cfg)
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



def _main_sizes(args, compile_cfg):
    if len(args.sizes) % 2:
        raise SystemExit(f'--sizes takes pairs H W, got {len(args.sizes)} numbers')
    sizes = list(zip(args.sizes[::2], args.sizes[1::2]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            cfg = Config.fromfile(
                write_family_config(family, osp.join(tmp, family), sizes[0][0], args.batch))
            init_default_scope(cfg.get('default_scope', 'mmseg'))
            rows += _new_size_rows(family, cfg, sizes, args.batch, compile_cfg)
    print(f'compile setting: {compile_cfg!r}; torch {__import__("torch").__version__}; '
          f'{os.cpu_count()} CPUs; one training forward/backward of batch {args.batch} per size')
    print('| family | sizes | ' + ' | '.join(f'first call at {h}x{w} (s)' for h, w in sizes)
          + f' | step at {sizes[-1][0]}x{sizes[-1][1]} vs eager |')
    print('|---|---|' + '---|' * (len(sizes) + 1))
    for family, mode, firsts, ratio in rows:
        print(f'| {family} | {mode} | ' + ' | '.join(f'{t:.1f}' for t in firsts)
              + f' | {ratio:.2f}x |')


if __name__ == '__main__':
    main()
