"""Training parity: does VT-FPN train as well as FPN wherever a user swaps it in?

    python benchmarks/training_parity.py [--rows ROW ...] [--seeds 0 1 2] [--jobs 2]
        [--scale 1.0] [--necks FPN VT-FPN [FPN-no-3x3]] [--vt-options ARGS]
        [--pretrained-backbone CKPT] [--out work_dirs/training_parity]

Every row trains the same model twice, once with mmdet's ``FPN`` and once with ``VTFPN`` (its
defaults: nothing but ``type`` and the widths change), for each seed, from scratch, through
``tools/train.py`` and its validation. Rows (ResNet-18 everywhere, necks 128 channels wide):

* ``lip-adamw``, ``lip-sgd``: Semantic FPN on the generated LIP-layout data (20 classes, 64x64,
  left/right labels swapped on flip), AdamW 1e-3 / the paper's SGD (0.01, momentum 0.9, wd 5e-4);
* ``cue-adamw``, ``cue-sgd``: Semantic FPN on the generated long-range task
  (vt_mm/datasets/demo_cue.py: a shape's class is set by a colour cue in a far corner);
* ``retinanet``: mmdet RetinaNet on generated COCO-format shapes (64 images of 160x128, 12
  epochs), AdamW (box AP);
* ``mask-rcnn``: mmdet Mask R-CNN on the same data, AdamW (mask AP).

Each run has a fixed seed (``randomness.seed``, deterministic algorithms), so a run repeats
exactly on the same machine; the seeds differ in initialisation and data order. The table gives
mean +- std over seeds and whether VT-FPN meets the goal: its mean within one FPN standard
deviation or 1.0 mIoU (AP: 10% relative) of FPN's, or above it. Writes ``OUT/results.md`` and
``OUT/loss_curves.png`` (mean training loss over seeds, per row). ``--jobs`` runs train in
parallel, each on ``--threads`` threads (default: 2 jobs x 1 thread on a 2-core machine).
Synthetic data: parity here says that the defaults train, not how the necks rank on LIP or COCO.

``--necks VT-FPN-3x3-coarse VT-FPN-dwsep`` add the trade-off variants (VTFPN
``output_convs``): FPN's 3x3 output convs kept on the stride-16 and -32 levels only, and a
depthwise-separable 3x3 on every output. ``--necks FPN-no-3x3`` adds a control
(``parity_necks.py``): FPN without its 3x3 output convolutions, which is VT-FPN without its
tokens; "VT-FPN - control" is what the tokens add,
"FPN - control" what the 3x3 convolutions VT-FPN replaces add. ``--vt-options`` passes extra
VTFPN arguments for experiments (e.g. ``"tokenizer_cfg=dict(scale_logits=False)"``).

``--pretrained-backbone CKPT`` starts every run's ResNet-18 from the same weights, made by
``pretrain_backbone.py`` (the paper's regime: its parity is with ImageNet-pretrained
backbones); the checkpoint must fit the rows' backbone key for key, which is checked before the
first run. The detection rows then use mmdet's ``ResNet`` with ``deep_stem=True`` (mmseg's
ResNetV1c, which the pretrained weights are) instead of the plain stem of their from-scratch
runs.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RUNTIME = osp.join(ROOT, 'configs', '_base_', 'vt_mm_runtime.py')

SEG_BASE = """
_base_ = ['mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/default_runtime.py', {runtime!r}]
norm_cfg = dict(type='BN', requires_grad=True)
crop_size = ({size}, {size})
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(depth=18, norm_cfg=norm_cfg),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    decode_head=dict(in_channels=[128, 128, 128, 128], channels=64, num_classes={num_classes},
                     norm_cfg=norm_cfg, dropout_ratio=0.0))
{data}
train_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False,
                        sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(pipeline=train_pipeline, **dataset))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(pipeline=test_pipeline, **val_dataset))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
{optim}
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval={iters})
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end={warmup}),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin={warmup}, end={iters}, by_epoch=False),
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval={iters}),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=True)
"""
LIP_DATA = """
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5, swap_seg_labels=[[14, 15], [16, 17], [18, 19]]),
    dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
dataset = dict(type='LIPDataset', data_root={root!r}, ann_file='TrainVal_images/train_id.txt',
               data_prefix=dict(img_path='TrainVal_images/train_images',
                                seg_map_path='TrainVal_parsing_annotations/train_segmentations'))
val_dataset = dict(type='LIPDataset', data_root={root!r}, ann_file='TrainVal_images/val_id.txt',
                   data_prefix=dict(img_path='TrainVal_images/val_images',
                                    seg_map_path='TrainVal_parsing_annotations/val_segmentations'))
"""
CUE_DATA = """
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
metainfo = dict(classes={classes!r})
dataset = dict(type='BaseSegDataset', data_root={root!r}, metainfo=metainfo, img_suffix='.png',
               seg_map_suffix='.png', data_prefix=dict(img_path='img_dir/train',
                                                       seg_map_path='ann_dir/train'))
val_dataset = dict(type='BaseSegDataset', data_root={root!r}, metainfo=metainfo, img_suffix='.png',
                   seg_map_suffix='.png', data_prefix=dict(img_path='img_dir/val',
                                                           seg_map_path='ann_dir/val'))
"""
ADAMW = ("optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, "
         "weight_decay=1e-4))")
SGD = ("optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, "
       "momentum=0.9, "
       "weight_decay=5e-4))")

DET_RECIPE = """
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=5e-4, weight_decay=1e-4),
                     clip_grad=dict(max_norm=10))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20)]
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval={epochs}))
randomness = dict(seed=0, deterministic=True)
model = dict(backbone=dict(depth=18, init_cfg=None),
             neck=dict(in_channels=[64, 128, 256, 512], out_channels=128))
{heads}
"""
RETINANET_HEADS = "model.update(bbox_head=dict(num_classes=3, in_channels=128, feat_channels=128))"
MASK_RCNN_HEADS = """model.update(
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=128),
        mask_head=dict(in_channels=128, conv_out_channels=128, num_classes=3)),
    # few objects per small image: fewer proposals and RoI samples keep a CPU run short
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200),
                   rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(max_per_img=20)))"""

# row -> (task, optimizer, metric name, metric key in the log, relative goal?)
ROWS = {
    'lip-adamw': ('lip', ADAMW, 'mIoU', 'mIoU', False),
    'lip-sgd': ('lip', SGD, 'mIoU', 'mIoU', False),
    'cue-adamw': ('cue', ADAMW, 'mIoU', 'mIoU', False),
    'cue-sgd': ('cue', SGD, 'mIoU', 'mIoU', False),
    'retinanet': ('retinanet', None, 'box AP', 'coco/bbox_mAP', True),
    'mask-rcnn': ('mask-rcnn', None, 'mask AP', 'coco/segm_mAP', True),
}
SEG_SIZE = 64  # image side of the generated segmentation data
SEG_ITERS = 800  # per segmentation run at --scale 1 (~220 s on one core)
DET_EPOCHS = 12  # per detection run at --scale 1 (RetinaNet ~100 s, Mask R-CNN ~260 s on one core)
# neck name -> the neck's config (merged over the row's); the one table of the variants, also
# read by vtfpn_complexity.py
NECKS = {
    'FPN': dict(type='FPN'),
    'VT-FPN': dict(type='VTFPN'),
    # control: FPN without its 3x3 output convs = VT-FPN without tokens (parity_necks.py)
    'FPN-no-3x3': dict(type='FPNWithoutOutputConvs'),
    # variants that buy back local capacity at a known FLOP cost (VTFPN output_convs)
    'VT-FPN-3x3-coarse': dict(type='VTFPN', output_convs='conv3x3', output_conv_levels=(2, 3)),
    'VT-FPN-dwsep': dict(type='VTFPN', output_convs='dwsep3x3'),
}
CONTROL_IMPORTS = ("custom_imports = dict(imports=['vt_mm', 'parity_necks'], "
                   "allow_failed_imports=False)\n")


def neck_imports(neck: str) -> str:
    """Config lines a neck needs besides its options (the control lives in parity_necks.py)."""
    return CONTROL_IMPORTS if NECKS[neck]['type'] == 'FPNWithoutOutputConvs' else ''


def make_data(out_dir: str) -> dict:
    """Generated datasets (deterministic; reused when present)."""
    from vt_mm.datasets import make_demo_lip
    from vt_mm.datasets.demo_cue import make_cue_seg
    from vt_mm.datasets.demo_shapes import make_demo_coco
    roots = dict(lip=osp.join(out_dir, 'data', 'LIP_demo'), cue=osp.join(out_dir, 'data', 'cue'),
                 coco=osp.join(out_dir, 'data', 'shapes_coco'))
    make_demo_lip(roots['lip'], size=SEG_SIZE, seed=0)
    make_cue_seg(roots['cue'], size=SEG_SIZE, seed=0)
    if not osp.isfile(osp.join(roots['coco'], 'annotations', 'instances_val.json')):
        make_demo_coco(roots['coco'], 'train', num_images=64, size=(160, 128), seed=0)
        make_demo_coco(roots['coco'], 'val', num_images=16, size=(160, 128), seed=1)
    return roots


def pretrained_text(task: str, checkpoint: str) -> str:
    """Config lines that start the row's backbone from ``checkpoint`` (pretrain_backbone.py).

    The segmentation rows' backbone is mmseg's ResNetV1c already; the detection rows' mmdet
    ``ResNet`` gets ``deep_stem=True``, the same network and keys. mmdet's fine-tuning regime
    (``frozen_stages=1``, ``norm_eval=True`` from its RetinaNet / Mask R-CNN configs) and
    mmseg's (nothing frozen, BN trained) stay as the toolboxes set them.
    """
    init = f"dict(type='Pretrained', checkpoint={checkpoint!r}, prefix='backbone.')"
    if task in ('lip', 'cue'):
        return f"model['backbone'].update(init_cfg={init})\n"
    return f"model['backbone'].update(deep_stem=True, init_cfg={init})\n"


def check_backbone_checkpoint(config: str, checkpoint: str, model=None) -> None:
    """Raises, naming the keys, when ``checkpoint``'s ``backbone.`` tensors do not fit the
    config's backbone exactly (mmengine's ``Pretrained`` init would only log a warning and
    train the unmatched layers from scratch). ``model``: the config's model if already built."""
    from vt_mm.analysis import build_model
    from vt_mm.engine.checkpoints import load_checkpoint_file, unwrap_state_dict
    if model is None:
        model, _, _ = build_model(config)
    want = {k: tuple(v.shape) for k, v in model.backbone.state_dict().items()
            if not k.endswith('num_batches_tracked')}
    state = unwrap_state_dict(load_checkpoint_file(checkpoint))
    have = {k[len('backbone.'):]: tuple(v.shape) for k, v in state.items()
            if k.startswith('backbone.') and not k.endswith('num_batches_tracked')}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    shapes = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or unexpected or shapes:
        raise ValueError(
            f'{checkpoint} does not fit the backbone of {config}: {len(missing)} missing '
            f'({missing[:4]}), {len(unexpected)} unexpected ({unexpected[:4]}), {len(shapes)} '
            f'of another shape ({[(k, have[k], want[k]) for k in shapes[:3]]}). Pretrain the '
            'backbone these rows use: benchmarks/pretrain_backbone.py --depth 18 '
            '(mmseg ResNetV1c, deep stem).')


def check_config_builds(config: str, row: str, neck: str):
    """The config's model; raises, naming the row and the neck, when it does not build: a neck
    option that one row's detector rejects (RetinaNet uses backbone levels 1-3 only) would
    otherwise fail only when its turn comes, after the other runs have cost their time."""
    from vt_mm.analysis import build_model
    try:
        return build_model(config)[0]
    except Exception as exc:  # any build error: the message names what to fix
        raise SystemExit(f'training_parity: row {row!r} with neck {neck!r} does not build '
                         f'({config}): {type(exc).__name__}: {exc}') from exc


def config_text(row: str, neck: str, roots: dict, scale: float, vt_options: str = '',
                pretrained_backbone: str = '') -> str:
    from vt_mm.datasets.demo_cue import CUE_CLASSES
    from vt_mm.datasets.demo_shapes import coco_data_config
    task, optim, _, _, _ = ROWS[row]
    if task in ('lip', 'cue'):
        iters = max(10, int(round(SEG_ITERS * scale)))
        data = (LIP_DATA.format(root=roots['lip']) if task == 'lip' else CUE_DATA.format(
            root=roots['cue'], classes=CUE_CLASSES))
        num_classes = 20 if task == 'lip' else len(CUE_CLASSES)
        text = SEG_BASE.format(runtime=RUNTIME, size=SEG_SIZE, num_classes=num_classes,
                               data=data, optim=optim, iters=iters, warmup=max(1, iters // 8))
    else:
        mask = task == 'mask-rcnn'
        base = ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
                if mask else 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
        text = (f'_base_ = [{base!r}, {RUNTIME!r}]\n' +
                coco_data_config(roots['coco'], mask=mask) +
                DET_RECIPE.format(epochs=max(1, int(round(DET_EPOCHS * scale))),
                                  heads=MASK_RCNN_HEADS if mask else RETINANET_HEADS))
    if pretrained_backbone:
        text += pretrained_text(task, pretrained_backbone)
    text += f"model['neck'].update({NECKS[neck]!r})\n" + neck_imports(neck)
    if neck.startswith('VT-FPN') and vt_options:
        text += f"model['neck'].update(dict({vt_options}))\n"
    return text


def train_once(config: str, work: str, seed: int, threads: int, key: str,
               extra_keys=()) -> dict:
    """One tools/train.py run; returns the metric (and ``extra_keys``' last values), the
    training losses and seconds/iteration."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, osp.dirname(osp.abspath(__file__))]),
               OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work,
           '--cfg-options', f'randomness.seed={seed}']
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f'training {config} (seed {seed}) failed:\n{out[-4000:]}')
    scalars = sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json')))[-1]
    logs = [json.loads(line) for line in open(scalars)]
    train = [r for r in logs if 'loss' in r]

    def last(name):
        found = re.findall(rf'{re.escape(name)}: (-?\d+\.\d+)', out)
        return float(found[-1]) if found else float('nan')

    return dict(metric=last(key), extra={k: last(k) for k in extra_keys},
                steps=[r['step'] for r in train], losses=[r['loss'] for r in train],
                s_per_iter=statistics.median([r['time'] for r in train if 'time' in r]
                                             or [float('nan')]),
                wall_s=time.time() - started)


def _mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def verdict(row: str, fpn: list, vt: list) -> tuple:
    """(gap VT-FPN - FPN, allowed shortfall, goal met?) by the issue's rule."""
    f_mean, f_std = _mean_std(fpn)
    v_mean, _ = _mean_std(vt)
    allowed = max(f_std, 0.10 * abs(f_mean) if ROWS[row][4] else 1.0)
    return v_mean - f_mean, allowed, v_mean >= f_mean - allowed


def report(results: dict, seeds, out_dir: str) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = list(results)
    # the necks whose runs all finished, in every row (a failed run leaves None)
    necks = [n for n in NECKS
             if all(r is not None for row in rows for r in results[row].get(n, [None]))]
    judged = 'FPN' in necks and 'VT-FPN' in necks
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.4), squeeze=False)
    head = ['row', 'metric'] + necks + (['VT-FPN - FPN', 'goal met'] if judged else []) + [
        f'{n} s/iter' for n in necks]
    lines = [
        f'seeds {list(seeds)}; mean +- std over seeds; goal: VT-FPN mean >= FPN mean - max(FPN '
        'std, 1.0 mIoU or 10% of AP)', '', '| ' + ' | '.join(head) + ' |',
        '|---' * len(head) + '|'
    ]
    for ax, row in zip(axes[0], rows):
        res = results[row]
        vals = {n: [r['metric'] for r in res[n]] for n in necks}
        cells = [row, ROWS[row][2]]
        for n in necks:
            m, s = _mean_std(vals[n])
            cells.append(f'{m:.2f} +- {s:.2f}' if not ROWS[row][4] else f'{m:.3f} +- {s:.3f}')
            steps = res[n][0]['steps']
            mean_loss = [statistics.mean(r['losses'][i] for r in res[n]) for i in range(len(steps))]
            ax.plot(steps, mean_loss, label=n)
        if judged:
            gap, allowed, ok = verdict(row, vals['FPN'], vals['VT-FPN'])
            cells += [f'{gap:+.3f}', f'{"yes" if ok else "NO"} (allowed -{allowed:.3f})']
        cells += [f'{statistics.median(r["s_per_iter"] for r in res[n]):.3f}' for n in necks]
        lines.append('| ' + ' | '.join(cells) + ' |')
        ax.set_title(row)
        ax.set_xlabel('iteration')
        ax.set_ylabel('training loss (mean over seeds)')
        ax.set_yscale('log')
        ax.legend()
    fig.tight_layout()
    png = osp.join(out_dir, 'loss_curves.png')
    fig.savefig(png, dpi=80)
    plt.close(fig)
    lines.append('')
    lines.append('per seed: ' + '; '.join(
        f'{row} {n} ' + ', '.join(f'{r["metric"]:.3f}' for r in results[row][n])
        for row in rows for n in necks))
    lines.append(f'\nloss curves: {png}')
    text = '\n'.join(lines) + '\n'
    with open(osp.join(out_dir, 'results.md'), 'w') as f:
        f.write(text)
    with open(osp.join(out_dir, 'results.json'), 'w') as f:
        json.dump({row: {n: results[row][n] for n in necks} for row in rows}, f)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--rows', nargs='+', choices=list(ROWS), default=list(ROWS))
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--jobs', type=int, default=2, help='training runs in parallel')
    parser.add_argument('--threads', type=int, default=1, help='threads per run')
    parser.add_argument('--scale', type=float, default=1.0,
                        help='schedule length factor (SEG_ITERS seg iterations, DET_EPOCHS det '
                             'epochs at 1.0)')
    parser.add_argument('--necks', nargs='+', choices=list(NECKS), default=['FPN', 'VT-FPN'],
                        help="necks to run; the goal is judged when FPN and VT-FPN both run; "
                             "FPN-no-3x3 is the control without FPN's 3x3 convs or tokens")
    parser.add_argument('--vt-options', default='',
                        help="extra VTFPN arguments for experiments, e.g. 'num_tokens=16'")
    parser.add_argument('--pretrained-backbone', metavar='CKPT', default='',
                        help='start every backbone from this checkpoint '
                             '(benchmarks/pretrain_backbone.py) instead of from '
                             'scratch; default --out becomes work_dirs/training_parity_pretrained')
    parser.add_argument('--out', default=None,
                        help='default: work_dirs/training_parity (_pretrained)')
    args = parser.parse_args(argv)
    if args.pretrained_backbone:
        args.pretrained_backbone = osp.abspath(args.pretrained_backbone)
        if not osp.isfile(args.pretrained_backbone):
            parser.error(f'--pretrained-backbone {args.pretrained_backbone}: no such file; make '
                         'one with benchmarks/pretrain_backbone.py')
    if args.out is None:
        args.out = osp.join(ROOT, 'work_dirs', 'training_parity' + (
            '_pretrained' if args.pretrained_backbone else ''))
    os.makedirs(args.out, exist_ok=True)
    roots = make_data(args.out)
    jobs = []
    for row in args.rows:
        for neck in args.necks:
            cfg = osp.join(args.out, f'{row}_{neck.replace("-", "").lower()}.py')
            with open(cfg, 'w') as f:
                f.write(config_text(row, neck, roots, args.scale, args.vt_options,
                                    args.pretrained_backbone))
            model = check_config_builds(cfg, row, neck)
            if args.pretrained_backbone and neck == args.necks[0]:
                check_backbone_checkpoint(cfg, args.pretrained_backbone, model)
            for seed in args.seeds:
                work = osp.join(args.out, 'work', f'{row}_{neck}_{seed}')
                jobs.append((row, neck, seed, cfg, work))
    results = {row: {n: [None] * len(args.seeds) for n in NECKS} for row in args.rows}
    started = time.time()

    failed = []

    def run(job):
        row, neck, seed, cfg, work = job
        try:
            res = train_once(cfg, work, seed, args.threads, ROWS[row][3])
        except Exception as exc:  # one failed run must not stop the others
            failed.append((row, neck, seed))
            print(f'[parity] {row} {neck} seed {seed}: FAILED ({exc})', file=sys.stderr,
                  flush=True)
            return
        print(f'[parity] {row} {neck} seed {seed}: {ROWS[row][2]} {res["metric"]:.3f} '
              f'({res["wall_s"]:.0f} s; {time.time() - started:.0f} s elapsed)',
              file=sys.stderr, flush=True)
        results[row][neck][args.seeds.index(seed)] = res

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(run, jobs))
    text = report(results, args.seeds, args.out)
    print(text)
    print(f'[parity] {len(jobs)} runs in {time.time() - started:.0f} s', file=sys.stderr)
    if failed:
        raise SystemExit(f'[parity] {len(failed)} of {len(jobs)} runs failed (their necks are '
                         f'left out of the table): {failed}')
    return results


if __name__ == '__main__':
    main()
