"""Pretrain a ResNet backbone on a generated 100-class task that stands in for ImageNet.

    python benchmarks/pretrain_backbone.py [--depth 18] [--iters 6000] [--batch 64]
        [--size 64] [--train-per-class 200] [--val-per-class 20] [--seed 0] [--threads 2]
        [--out work_dirs/pretrain_backbone]

The VT paper's VT-FPN / FPN parity (LIP 47.39 vs 47.04 mIoU) uses ImageNet-pretrained
backbones, which this offline CPU machine cannot make; ``training_parity.py
--pretrained-backbone CKPT`` needs a backbone whose features already separate textures and
outlines. This tool makes one: mmpretrain's ``ImageClassifier`` with the very backbone the
parity rows use (mmseg's ``ResNetV1c``, the deep-stem ResNet of mmseg's FPN config, built
across scopes as ``mmseg.ResNetV1c``), a global-average-pooling neck and a linear head, trained
through ``tools/train.py`` on ``vt_mm/datasets/demo_classes.py`` (100 classes = 10 shapes x 10
textures, random colours, positions, rotations and clutter; a generator that shares nothing
with the parity tasks'). Recipe, ImageNet's in small: SGD momentum 0.9, lr 0.1 at batch 64 with
linear warm-up and cosine decay, weight decay 1e-4, label smoothing 0.1, RandomResizedCrop and
flips.

Writes ``OUT/resnet{depth}_v1c_backbone.pth``: ``{'state_dict': {'backbone.<key>': tensor},
'meta': {...}}`` (plain tensors, loads under ``weights_only=True``), the held-out top-1/top-5
in ``meta`` and printed. Load it in an mmseg or mmdet config with::

    model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=CKPT,
                                             prefix='backbone.')))

(mmdet's ``ResNet`` needs ``deep_stem=True`` for the same keys; training_parity.py sets it.)
"""
import argparse
import os
import os.path as osp

import torch
from training_parity import ROOT, RUNTIME, train_once  # the same folder

from vt_mm.datasets.demo_classes import CLASSES, make_demo_classes

# the backbone of mmseg's _base_/models/fpn_r50.py (ResNetV1c), at the chosen depth
BACKBONE = dict(type='mmseg.ResNetV1c', num_stages=4, out_indices=(0, 1, 2, 3),
                dilations=(1, 1, 1, 1), strides=(1, 2, 2, 2), norm_eval=False, style='pytorch',
                contract_dilation=True)
CONFIG = """
_base_ = ['mmpretrain::_base_/default_runtime.py', {runtime!r}]
custom_imports = dict(imports=['vt_mm', 'mmseg.models'], allow_failed_imports=False)
data_preprocessor = dict(num_classes={num_classes}, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
model = dict(
    type='ImageClassifier',
    backbone=dict(depth={depth}, norm_cfg=dict(type='BN', requires_grad=True), **{backbone!r}),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes={num_classes}, in_channels={channels},
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1), topk=(1, 5)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale={size}, crop_ratio_range=(0.35, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
dataset = dict(type='CustomDataset', data_root={root!r}, classes={root!r} + '/meta/classes.txt')
train_dataloader = dict(
    batch_size={batch}, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(ann_file='meta/train.txt', data_prefix='train', pipeline=train_pipeline,
                 **dataset))
val_dataloader = dict(
    batch_size=100, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(ann_file='meta/val.txt', data_prefix='val', pipeline=test_pipeline, **dataset))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(type='SGD', lr={lr}, momentum=0.9, weight_decay=1e-4,
                                    nesterov=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end={warmup}),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin={warmup}, end={iters})]
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters},
                 val_interval={val_interval})
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(type='LoggerHook', interval={log_interval}, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval={val_interval},
                    max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed={seed}, deterministic=True)
"""


def config_text(root: str, depth: int, iters: int, batch: int, size: int, lr: float,
                seed: int) -> str:
    return CONFIG.format(runtime=RUNTIME, root=root, num_classes=len(CLASSES), depth=depth,
                         backbone=BACKBONE, channels=512 if depth < 50 else 2048, size=size,
                         batch=batch, lr=lr, iters=iters, warmup=max(1, iters // 20),
                         val_interval=max(1, iters // 2), log_interval=min(50, iters),
                         seed=seed)


def extract_backbone(checkpoint_path: str, out_path: str, meta: dict) -> dict:
    """Writes the ``backbone.`` tensors of a Runner checkpoint as a plain-tensor checkpoint."""
    from vt_mm.engine.checkpoints import atomic_write, load_checkpoint_file, unwrap_state_dict
    state = unwrap_state_dict(load_checkpoint_file(checkpoint_path))
    backbone = {k: v.clone() for k, v in state.items() if k.startswith('backbone.')}
    if not backbone:
        raise ValueError(f'{checkpoint_path} holds no backbone.* weights')
    import io
    buf = io.BytesIO()
    torch.save(dict(state_dict=backbone, meta=meta), buf)
    atomic_write(buf.getvalue(), out_path)
    return backbone


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--depth', type=int, choices=[18, 34, 50], default=18)
    parser.add_argument('--iters', type=int, default=6000)
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--lr', type=float, default=0.1)
    parser.add_argument('--size', type=int, default=64, help='image side of the generated data')
    parser.add_argument('--train-per-class', type=int, default=200)
    parser.add_argument('--val-per-class', type=int, default=20)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default=osp.join(ROOT, 'work_dirs', 'pretrain_backbone'))
    args = parser.parse_args(argv)
    if args.iters < 2:
        parser.error(f'--iters {args.iters}: use >= 2 (validation runs at half and at the end)')
    os.makedirs(args.out, exist_ok=True)
    root = make_demo_classes(osp.join(args.out, 'data'), args.train_per_class, args.val_per_class,
                             args.size, seed=0)
    cfg = osp.join(args.out, f'resnet{args.depth}_v1c_demo_classes.py')
    with open(cfg, 'w') as f:
        f.write(config_text(root, args.depth, args.iters, args.batch, args.size, args.lr,
                            args.seed))
    work = osp.join(args.out, 'work')
    res = train_once(cfg, work, args.seed, args.threads, 'accuracy/top1',
                     extra_keys=('accuracy/top5', ))
    with open(osp.join(work, 'last_checkpoint')) as f:
        last = f.read().strip()
    meta = dict(arch=f'mmseg.ResNetV1c depth={args.depth}', dataset='vt_mm demo_classes',
                classes=len(CLASSES), train_images=args.train_per_class * len(CLASSES),
                val_images=args.val_per_class * len(CLASSES), iters=args.iters,
                batch=args.batch, size=args.size, seed=args.seed, top1=res['metric'],
                top5=res['extra']['accuracy/top5'], source=osp.abspath(last))
    out = osp.join(args.out, f'resnet{args.depth}_v1c_backbone.pth')
    backbone = extract_backbone(last, out, meta)
    print(f'[pretrain] ResNetV1c-{args.depth} on {len(CLASSES)} generated classes, '
          f'{args.iters} iterations at batch {args.batch} ({res["wall_s"]:.0f} s): held-out '
          f'top-1 {res["metric"]:.2f} ({meta["val_images"]} images); {len(backbone)} backbone '
          f'tensors -> {out}')
    return dict(checkpoint=out, top1=res['metric'], wall_s=res['wall_s'])


if __name__ == '__main__':
    main()
