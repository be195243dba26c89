"""Draw a segmentation config's training samples (image + ground truth) as the pipeline gives them.

    python tools/analysis_tools/browse_dataset.py CONFIG --output-dir DIR [--not-show]
        [--show-interval S] [--max-samples N] [--cfg-options k=v ...]

mmseg's own tools/analysis_tools/browse_dataset.py (same arguments) fails on every mmseg 1.2.2
segmentation config with OpenCV >= 4.5 (the stack has 5.0): it hands the visualizer the image
as a transposed view (``inputs.permute(1, 2, 0).numpy()[..., [2, 1, 0]]``), the visualizer
draws its label boxes into ``np.zeros_like(image)``, which keeps that layout, and
``cv2.rectangle`` rejects it: ``Expected Ptr<cv::UMat> for argument 'img'`` /
``Layout of the output array img is incompatible with cv::Mat``. This is the same tool with the
image made contiguous, and vt-mm's config loading (data-root checks, ``vt_mm::`` bases).
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

import vt_mm  # noqa: F401  (registers datasets and transforms)
from vt_mm.engine import config, data_checks, preflight


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Browse a segmentation dataset')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--output-dir', default=None, help='write the drawings here')
    parser.add_argument('--not-show', action='store_true', help='do not open a window')
    parser.add_argument('--show-interval', type=float, default=2, help='seconds per sample')
    parser.add_argument('--max-samples', type=int, default=None, help='stop after N samples')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    import numpy as np
    from mmengine.registry import init_default_scope
    from mmengine.utils import ProgressBar
    from mmseg.registry import DATASETS, VISUALIZERS

    args = parse_args(argv)
    if args.output_dir is None and args.not_show:
        raise SystemExit('browse_dataset: nothing to do with --not-show and no --output-dir')
    cfg = config.load_config(args.config, args.cfg_options, 'none', None)
    if cfg.get('default_scope', 'mmseg') != 'mmseg':
        raise SystemExit(f'browse_dataset: {args.config} is a {cfg.default_scope} config; this '
                         'tool draws segmentation datasets (mmdet and mmpretrain have their own)')
    init_default_scope('mmseg')
    preflight.preflight(lambda: data_checks.check_data(cfg, ('train_dataloader', )))
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    visualizer = VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = dataset.metainfo
    total = len(dataset) if args.max_samples is None else min(args.max_samples, len(dataset))
    progress = ProgressBar(total)
    for index in range(total):
        item = dataset[index]
        # BGR CHW tensor -> RGB HWC, contiguous: OpenCV draws only into contiguous arrays
        image = np.ascontiguousarray(item['inputs'].permute(1, 2, 0).numpy()[..., ::-1])
        sample = item['data_samples'].numpy()
        name = osp.basename(sample.img_path)
        visualizer.add_datasample(
            name=name, image=image, data_sample=sample, draw_gt=True, draw_pred=False,
            wait_time=args.show_interval, show=not args.not_show,
            out_file=osp.join(args.output_dir, name) if args.output_dir else None)
        progress.update()
    print(f'\n[browse_dataset] {total} samples drawn'
          + (f' to {args.output_dir}' if args.output_dir else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
