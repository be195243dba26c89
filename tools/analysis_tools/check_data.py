"""List every bad sample of a config's data splits, before a training run pays for them.

    python tools/analysis_tools/check_data.py CONFIG [--splits train val test]
        [--max-samples N] [--cfg-options k=v ...]

For each split it builds the dataset as the Runner would, then reads every sample (or N evenly
spaced ones) through the pipeline's loading steps and reports, with a progress bar: an empty
split, files that cannot be read, segmentation labels whose size differs from their image, and
label values outside [0, num_classes) that are not the ignore index, each with the files and the
setting that fixes it (vt_mm/engine/data_checks.py). Exit status 1 when anything was found.
``tools/train.py --check-data`` runs the same scan before training; by default it checks 16
samples per split.
"""
import argparse
import sys

from mmengine.config import DictAction

import vt_mm  # noqa: F401  (registers datasets and transforms)
from vt_mm.engine import config, data_checks, preflight


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Check every sample of a config\'s data')
    parser.add_argument('config')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'],
                        choices=['train', 'val', 'test'])
    parser.add_argument('--max-samples', type=int, default=None,
                        help='check this many evenly spaced samples per split (default: all)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = config.load_config(args.config, args.cfg_options, 'none', None)
    splits = tuple(f'{s}_dataloader' for s in args.splits)
    preflight.preflight(lambda: data_checks.check_data(cfg, splits))
    problems, checked = data_checks.check_splits(cfg, splits, args.max_samples, progress=True)
    for problem in problems:
        print(problem)
    print(f'[check_data] {checked} samples checked, {len(problems)} problems')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
