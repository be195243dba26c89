"""Synthetic-data training benchmark: does every model learn, and how fast per iteration?

    python benchmarks/synthetic_benchmark.py [--tasks seg det] [--iters 150]
        [--det-epochs 8] [--out work_dirs/synthetic_benchmark]

* seg: Semantic FPN (ResNet-50) with FPN vs with VT-FPN on the generated LIP-layout data
  (configs/demo/vtfpn_r50_lip-demo-128x128.py's recipe, same budget of ``--iters``
  iterations), mIoU on its validation split;
* det: mmdet's RetinaNet on a generated COCO-format shapes dataset with ResNet-18 + FPN (the
  baseline), ResNet-18 + VT-FPN, and PyramidTNT-Ti (detection upsampling) + FPN, for
  ``--det-epochs`` epochs; COCO box AP on its validation split.

Every run goes through tools/train.py (and its validation), from scratch, on the CPU. Writes
``OUT/results.md`` (table: seconds per iteration, first and last loss, metric) and
``OUT/loss_curves.png``. The data are synthetic: the numbers show that the models learn and
what an iteration costs, not how they rank on real data.
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

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

SEG_COMMON = """
_base_ = [{demo!r}]
data_root = {root!r}
max_iters = {iters}
train_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=max(1, max_iters // 7)),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=max(1, max_iters // 7), end=max_iters,
         by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=max_iters))
randomness = dict(seed=0)
"""
SEG_MODELS = {
    'FPN': "model = dict(neck=dict(_delete_=True, type='FPN', in_channels=[256, 512, 1024, 2048], "
           "out_channels=256, num_outs=4))\n",
    'VT-FPN': '',
}

DET_RECIPE = """
model = dict(bbox_head=dict(num_classes=3))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=5e-4, weight_decay=1e-4),
                     clip_grad=dict(max_norm=10))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20)]
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={epochs}))
randomness = dict(seed=0)
"""
DET_MODELS = {
    'RetinaNet R-18 FPN': "model.update(backbone=dict(depth=18, init_cfg=None), neck=dict("
                          "in_channels=[64, 128, 256, 512], out_channels=128), bbox_head=dict("
                          "num_classes=3, in_channels=128, feat_channels=128))\n",
    'RetinaNet R-18 VT-FPN': "model.update(backbone=dict(depth=18, init_cfg=None), neck=dict("
                             "type='VTFPN', in_channels=[64, 128, 256, 512], out_channels=128), "
                             "bbox_head=dict(num_classes=3, in_channels=128, feat_channels=128))\n",
    'RetinaNet PyramidTNT-Ti FPN': "model.update(backbone=dict(_delete_=True, type='PyramidTNT', "
                                   "arch='ti', img_size=192, upsample=True, out_indices=(1, 2, 3), "
                                   "drop_path_rate=0.1), neck=dict(in_channels=[160, 320, 320], "
                                   "start_level=0, out_channels=128), "
                                   "bbox_head=dict(num_classes=3, "
                                   "in_channels=128, feat_channels=128))\n",
}


def det_config_text(name: str, root: str, epochs: int) -> str:
    """The config of DET_MODELS[name]: mmdet's RetinaNet on the generated shapes at root."""
    from vt_mm.datasets.demo_shapes import coco_data_config
    runtime = osp.join(ROOT, 'configs', '_base_', 'vt_mm_runtime.py')
    return (f"_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', {runtime!r}]\n" +
            coco_data_config(root) + DET_RECIPE.format(epochs=epochs) + DET_MODELS[name])


def _train(config: str, work: str):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
                           '--work-dir', work], cwd=ROOT, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f'training {config} failed:\n{out[-4000:]}')
    (scalars, ) = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    logs = [json.loads(line) for line in open(scalars)]
    train = [r for r in logs if 'loss' in r]
    return out, train


def _metric(out: str, key: str) -> float:
    found = re.findall(rf'{re.escape(key)}: (-?\d+\.\d+)', out)
    return float(found[-1]) if found else float('nan')


def _selected(models: dict, pattern):
    return {k: v for k, v in models.items() if not pattern or re.search(pattern, k)}


def run_seg(out_dir: str, iters: int, pattern=None):
    from vt_mm.datasets import make_demo_lip
    root = osp.join(out_dir, 'data', 'LIP_demo')
    if not osp.isdir(root):
        make_demo_lip(root, seed=0)
    results = []
    for name, extra in _selected(SEG_MODELS, pattern).items():
        cfg = osp.join(out_dir, f'seg_{name.replace("-", "").lower()}.py')
        with open(cfg, 'w') as f:
            demo = osp.join(ROOT, 'configs', 'demo', 'vtfpn_r50_lip-demo-128x128.py')
            f.write(SEG_COMMON.format(demo=demo, root=root, iters=iters) + extra)
        print(f'[synthetic] seg {name}: {iters} iterations', file=sys.stderr, flush=True)
        out, train = _train(cfg, osp.join(out_dir, f'work_seg_{name}'))
        results.append(dict(task='seg (LIP-layout)', model=f'Semantic FPN R-50 {name}',
                            train=train, metric='mIoU', value=_metric(out, 'mIoU')))
    return results


def run_det(out_dir: str, epochs: int, num_train: int = 32, num_val: int = 8, pattern=None):
    from vt_mm.datasets.demo_shapes import make_demo_coco
    root = osp.join(out_dir, 'data', 'shapes_coco')
    if not osp.isdir(root):
        make_demo_coco(root, 'train', num_images=num_train, size=(160, 128), seed=0)
        make_demo_coco(root, 'val', num_images=num_val, size=(160, 128), seed=1)
    results = []
    for name in _selected(DET_MODELS, pattern):
        cfg = osp.join(out_dir, 'det_' + re.sub(r'[^a-z0-9]+', '_', name.lower()) + '.py')
        with open(cfg, 'w') as f:
            f.write(det_config_text(name, root, epochs))
        print(f'[synthetic] det {name}: {epochs} epochs', file=sys.stderr, flush=True)
        out, train = _train(cfg, osp.join(out_dir, 'work_' + osp.basename(cfg)[:-3]))
        results.append(dict(task='det (COCO-format shapes)', model=name, train=train,
                            metric='box AP', value=_metric(out, 'coco/bbox_mAP')))
    return results


def report(results, out_dir: str) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tasks = sorted({r['task'] for r in results})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in (r for r in results if r['task'] == task):
            ax.plot([t['step'] for t in r['train']], [t['loss'] for t in r['train']],
                    label=r['model'])
        ax.set_title(f'{task}: training loss (synthetic data)')
        ax.set_xlabel('iteration')
        ax.set_ylabel('loss')
        ax.legend()
    fig.tight_layout()
    png = osp.join(out_dir, 'loss_curves.png')
    fig.savefig(png, dpi=90)
    plt.close(fig)
    lines = ['Synthetic data (generated, not LIP/COCO): these numbers show that each model learns',
             'and what an iteration costs on this CPU, not how the models compare on real data.',
             '', '| task | model | iterations | s / iter (median) | first loss | last loss | '
                 'metric |',
             '|---|---|---|---|---|---|---|']
    for r in results:
        times = [t['time'] for t in r['train'] if 'time' in t]
        value = 'n/a (no detections)' if r['value'] != r['value'] else f"{r['value']:.3f}"
        lines.append(f"| {r['task']} | {r['model']} | {len(r['train'])} | "
                     f"{statistics.median(times):.2f} | {r['train'][0]['loss']:.3f} | "
                     f"{r['train'][-1]['loss']:.3f} | {r['metric']} {value} |")
    lines.append(f'\nloss curves: {png}')
    text = '\n'.join(lines) + '\n'
    with open(osp.join(out_dir, 'results.md'), 'w') as f:
        f.write(text)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--tasks', nargs='+', choices=['seg', 'det'], default=['seg', 'det'])
    parser.add_argument('--iters', type=int, default=150, help='segmentation iterations')
    parser.add_argument('--det-epochs', type=int, default=8)
    parser.add_argument('--det-images', type=int, default=32)
    parser.add_argument('--models', help='only the models whose name matches this regex')
    parser.add_argument('--out', default=osp.join(ROOT, 'work_dirs', 'synthetic_benchmark'))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    results = []
    if 'seg' in args.tasks:
        results += run_seg(args.out, args.iters, args.models)
    if 'det' in args.tasks:
        results += run_det(args.out, args.det_epochs, args.det_images, pattern=args.models)
    text = report(results, args.out)
    print(text)
    return results


if __name__ == '__main__':
    main()
