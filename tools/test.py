"""Test a checkpoint with an mmseg, mmdet or mmpretrain config of vt-mm (the OpenMMLab test CLI).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out PATH] [--show-dir DIR]
                         [--tta] [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

--show-dir writes prediction overlays (segmentation masks, detection boxes, class labels) to
DIR; a relative DIR is under the work dir (mmdet: under its timestamped folder); --out keeps the
raw predictions (mmseg: a folder of PNG label maps; mmdet / mmpretrain: a pickle file).
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, ConfigDict
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import vt_mm  # noqa: F401
from vt_mm.engine import checkpoints, config, data_checks, distributed, preflight


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a checkpoint with a vt-mm config')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and results')
    parser.add_argument('--out', help='where to keep the raw predictions')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--show-dir', help='write prediction overlays to this dir')
    parser.add_argument('--wait-time', type=float, default=2, help='--show interval (s)')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation (tta_model)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=config.ConfigOptionsAction,
        help='override config entries')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _enable_visualization(cfg: Config, toolbox: str, args) -> None:
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise SystemExit('--show/--show-dir need default_hooks.visualization in the config')
    vis = hooks.visualization
    if toolbox == 'mmpretrain':
        vis.enable = True
        if args.show_dir:
            vis.out_dir = args.show_dir
    elif toolbox == 'mmdet':
        vis.draw = True
        if args.show_dir:
            vis.test_out_dir = args.show_dir
    else:  # mmseg draws through the visualizer's save_dir
        vis.draw = True
        if args.show_dir:  # relative to the work dir, like mmdet's test_out_dir
            cfg.visualizer.save_dir = osp.join(cfg.work_dir, args.show_dir)
    vis.interval = 1  # every image, not every 50th
    vis.show = args.show
    if args.show:
        vis.wait_time = args.wait_time


def _keep_outputs(cfg: Config, toolbox: str, out: str) -> None:
    if toolbox == 'mmseg':
        evaluators = cfg.test_evaluator
        evaluators = evaluators if isinstance(evaluators, list) else [evaluators]
        for ev in evaluators:
            ev['output_dir'] = out
            ev['keep_results'] = True
    else:
        if not out.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'--out {out}: mmdet / mmpretrain results are a pickle file; use a '
                             '.pkl path')
        dump = ConfigDict(type='DumpDetResults' if toolbox == 'mmdet' else 'DumpResults',
                          out_file_path=out)
        if isinstance(cfg.test_evaluator, (list, tuple)):
            cfg.test_evaluator = list(cfg.test_evaluator) + [dump]
        else:
            cfg.test_evaluator = [cfg.test_evaluator, dump]


def build_config(args) -> Config:
    cfg = config.load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    toolbox = config.toolbox_of(cfg)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint {args.checkpoint!r}: no such file')
    cfg.load_from = None  # loaded strictly by checkpoints.load_checkpoint_strictly
    if args.show or args.show_dir:
        _enable_visualization(cfg, toolbox, args)
    if args.tta:
        if not cfg.get('tta_model') or not cfg.get('tta_pipeline'):
            raise SystemExit('--tta needs tta_model and tta_pipeline in the config')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        _keep_outputs(cfg, toolbox, args.out)
    return cfg


def _check_checkpoint_file(path: str) -> None:
    """A file that is not a checkpoint, or weights with NaN/Inf: refused before any work."""
    state = checkpoints.state_dict_of(checkpoints.read_checkpoint(path))
    checkpoints.check_finite(state, f'checkpoint {path}')


# errors that end a test with their message only (they say what to do)
USER_ERRORS = (checkpoints.CheckpointFileError, checkpoints.NonFiniteWeightsError,
               checkpoints.CheckpointMismatchError)


def main(argv=None):
    args = parse_args(argv)
    cfg = preflight.preflight_value(lambda: build_config(args))
    try:
        _check_checkpoint_file(args.checkpoint)
    except USER_ERRORS as e:
        raise SystemExit(f'ERROR: {e}') from None
    preflight.preflight(lambda: data_checks.check_data(cfg, ('test_dataloader', )))
    distributed.setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    try:
        checkpoints.load_checkpoint_strictly(runner, args.checkpoint)
    except USER_ERRORS as e:
        raise SystemExit(f'ERROR: {e}') from None
    data_checks.guard_samples(runner.test_dataloader.dataset,
                              data_checks.label_settings(cfg)['ignore_index'])
    metrics = runner.test()
    distributed.finish_distributed()  # a distributed run ends the process here
    return metrics


if __name__ == '__main__':
    main()
