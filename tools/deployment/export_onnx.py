"""Export vt-mm models to ONNX and check them against PyTorch with onnxruntime.

    python tools/deployment/export_onnx.py CONFIG [CONFIG ...] [--checkpoint CKPT]
        [--shape H W] [--check-shape H W ...] [--static] [--deploy] [--out-dir DIR]

Every family: mmseg segmentors (Semantic FPN with VT-FPN, SeaFormer + LightHead) export image ->
decode-head logits; mmpretrain classifiers (VT-ResNet, PyramidTNT, SeaFormer) image -> class
logits; mmdet detectors export their backbone + neck (the part vt-mm provides: VT-FPN, or a
PyramidTNT backbone with FPN) image -> feature maps, and leave anchors, NMS and RoI heads to
mmdeploy. Height and width are dynamic unless ``--static``: the graph is traced at ``--shape``
(default: the config's test size) and then run by onnxruntime at that size and at each
``--check-shape`` (default: an odd size below it), on the same random image as PyTorch; the
largest absolute difference per size is printed, and the tool exits with status 1 if one
exceeds ``--tol`` (1e-4) times the output's largest magnitude when that is above 1 (float32
rounding grows with the values: SeaFormer-L's classifier logits reach ~14 and differ by ~1.5e-4).
``--deploy`` folds Conv-BN pairs first (SeaFormer's deploy mode).
Without ``--checkpoint`` the model is freshly initialised (nothing is downloaded).
Needs ``pip install onnx onnxruntime`` (the ``deploy`` extra).
"""
import argparse
import os
import os.path as osp
import sys

from vt_mm.analysis import build_model, default_shape
from vt_mm.deploy import check_onnx, export_onnx, switch_to_deploy


def odd_below(shape):
    """An odd size a bit below ``shape`` that a stride-32 model still takes (>= 33)."""
    return tuple(max(33, (s * 3 // 4) | 1) for s in shape)


def export_and_check(config, out_dir, shape=None, check_shapes=None, static=False, deploy=False,
                     checkpoint=None, verbose=False):
    model, cfg, toolbox = build_model(config, verbose=verbose)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    model.eval()
    if deploy:
        switch_to_deploy(model)
    shape = tuple(shape or default_shape(cfg, toolbox))
    if check_shapes is None:
        check_shapes = [] if static else [odd_below(shape)]
    name = osp.splitext(osp.basename(config.split('::')[-1]))[0]
    path = osp.join(out_dir, name + '.onnx')
    outputs = export_onnx(model, path, shape, dynamic=not static, toolbox=toolbox)
    rows = check_onnx(model, path, [shape] + [tuple(s) for s in check_shapes], toolbox=toolbox)
    return dict(config=config, path=path, toolbox=toolbox, outputs=outputs, checks=rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--checkpoint', help='weights to load strictly (one config only)')
    parser.add_argument('--verbose', action='store_true',
                        help="also print mmengine's model-initialisation log")
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='example size of the trace (default: the config\'s test size)')
    parser.add_argument('--check-shape', type=int, nargs=2, action='append', metavar=('H', 'W'),
                        help='further sizes to check (repeatable; default: an odd size)')
    parser.add_argument('--static', action='store_true', help='fixed input size')
    parser.add_argument('--deploy', action='store_true', help='fold Conv-BN pairs first')
    parser.add_argument('--tol', type=float, default=1e-4)
    parser.add_argument('--out-dir', default='work_dirs/onnx')
    args = parser.parse_args(argv)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        sys.exit('onnx / onnxruntime are not installed: pip install onnx onnxruntime')
    if args.checkpoint and len(args.configs) > 1:
        sys.exit('--checkpoint goes with one config')
    os.makedirs(args.out_dir, exist_ok=True)
    print('| config | exported | output shapes | input size | max abs output | max abs diff |')
    print('|---|---|---|---|---|---|')
    worst = 0.0
    for config in args.configs:
        res = export_and_check(config, args.out_dir, args.shape, args.check_shape, args.static,
                               args.deploy, args.checkpoint, verbose=args.verbose)
        what = {'mmseg': 'logits', 'mmpretrain': 'logits', 'mmdet': 'backbone + neck'}
        for i, row in enumerate(res['checks']):
            worst = max(worst, row['max_abs_diff'] / max(1.0, row['max_abs_output']))
            shapes = ', '.join('x'.join(map(str, s)) for s in row['shapes'])
            print(f'| {osp.basename(config) if i == 0 else ""} | '
                  f'{what[res["toolbox"]] if i == 0 else ""} | {shapes} | '
                  f'{row["size"][0]}x{row["size"][1]} | {row["max_abs_output"]:.2f} | '
                  f'{row["max_abs_diff"]:.1e} |')
    if worst > args.tol:
        sys.exit(f'[export_onnx] onnxruntime differs from PyTorch by {worst:.2e} (relative to '
                 f'outputs above 1) > {args.tol}')
    print(f'[export_onnx] all within {args.tol} (relative to outputs above 1); files in '
          f'{args.out_dir}')


if __name__ == '__main__':
    main()
