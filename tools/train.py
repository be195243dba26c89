"""Train an mmseg, mmdet or mmpretrain config of vt-mm (the OpenMMLab train CLI).

    python tools/train.py configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py [--work-dir DIR]
                          [--resume [CKPT]] [--check-data]
                          [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

Before the Runner is built it checks the data (roots, non-empty splits, and 16 evenly spaced
samples of the train and val splits: readable files, label sizes and values; every sample with
--check-data) and the checkpoints the config names; checkpoints are written atomically and
finite, and --resume takes the newest one in the work dir that loads
(vt_mm/engine/checkpoints/).

Works on CPU-only machines and torch 2.14 (weights_only checkpoint loading): see
vt_mm/engine/ (config.py, distributed.py, preflight.py) for what differs from the toolboxes'
own train.py.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import vt_mm  # noqa: F401  (registers modules, allow-lists checkpoint types)
from vt_mm.engine import checkpoints, config, data_checks, distributed, preflight, workdir_lock


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model with a vt-mm config')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        help='resume from this checkpoint, or (no value) from the latest one in the work dir')
    parser.add_argument(
        '--check-data', action='store_true',
        help='check every sample of the train and val splits before training (default: 16 '
        'evenly spaced samples each); tools/analysis_tools/check_data.py lists them without '
        'training')
    parser.add_argument('--amp', action='store_true', help='mixed precision (needs a GPU)')
    parser.add_argument(
        '--auto-scale-lr', action='store_true', help='scale the lr by the actual batch size')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=config.ConfigOptionsAction,
        help='override config entries, e.g. train_cfg.max_iters=100 model.pretrained=None')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args) -> Config:
    cfg = config.load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    preflight.check_amp(args.amp)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise SystemExit('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise SystemExit(f'--resume {args.resume}: no such checkpoint file')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


# errors that end a run with their message only (they say what to do)
USER_ERRORS = (workdir_lock.WorkDirBusyError, checkpoints.CheckpointMismatchError,
               checkpoints.CheckpointFileError)


def main(argv=None):
    args = parse_args(argv)
    cfg = preflight.preflight_value(lambda: build_config(args))
    splits = ('train_dataloader', 'val_dataloader')
    preflight.preflight(lambda: preflight.check_writable(cfg))
    if distributed.launch_rank() == 0:  # one run per work dir, before anything is written
        preflight.preflight(lambda: workdir_lock.lock_work_dir(cfg.work_dir))
    preflight.preflight(
        lambda: data_checks.check_data(cfg, splits),
        lambda: data_checks.preflight_data(cfg, splits, None if args.check_data else 16),
        lambda: None if cfg.get('resume', False) else checkpoints.check_checkpoints(cfg))
    distributed.setup_cpu_distributed(cfg, args.launcher)
    preflight.check_reliability_hooks(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    data_checks.check_num_classes(cfg, runner.train_dataloader.dataset)
    ignore_index = data_checks.label_settings(cfg)['ignore_index']
    data_checks.guard_samples(runner.train_dataloader.dataset, ignore_index)
    if cfg.get('val_dataloader', None) and cfg.get('val_cfg', None):
        data_checks.guard_samples(runner.val_dataloader.dataset, ignore_index)
    try:
        runner.train()
    except checkpoints.CheckpointDiskFullError as e:
        raise SystemExit(f'ERROR: {e.strerror}') from None
    except USER_ERRORS as e:
        raise SystemExit(f'ERROR: {e}') from None
    distributed.finish_distributed()  # a distributed run ends the process here


if __name__ == '__main__':
    main()
