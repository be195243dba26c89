"""Export an mmseg segmentor config (+ checkpoint) to ONNX and check it against PyTorch.

    python tools/deployment/export_onnx.py CONFIG [--checkpoint CKPT] [--shape 512 512]
        [--deploy] [--out model.onnx]

``--deploy`` folds Conv-BN pairs first (SeaFormer's deploy mode). The exported graph maps a
normalised image (1, 3, H, W) to the decode head's logits; the script runs it with onnxruntime
and prints the largest difference from PyTorch's output. Needs ``pip install onnx onnxruntime``.
"""
import argparse
import sys

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import vt_mm  # noqa: F401
from vt_mm.deploy import export_segmentor_onnx, switch_to_deploy
from vt_mm.engine.runtime import replace_syncbn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--checkpoint')
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'))
    parser.add_argument('--deploy', action='store_true', help='fold Conv-BN pairs first')
    parser.add_argument('--out', default='model.onnx')
    args = parser.parse_args(argv)
    try:
        import onnxruntime as ort
    except ImportError:
        sys.exit('onnxruntime is not installed: pip install onnx onnxruntime')
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile(args.config)
    replace_syncbn(cfg)
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    else:
        model.init_weights()
    model.eval()
    if args.deploy:
        switch_to_deploy(model)
    export_segmentor_onnx(model, args.out, tuple(args.shape))
    x = torch.randn(1, 3, *args.shape)
    with torch.no_grad():
        expected = model._forward(x).numpy()
    session = ort.InferenceSession(args.out, providers=['CPUExecutionProvider'])
    (got, ) = session.run(None, {'input': x.numpy()})
    print(f'[export_onnx] {args.out}: output {got.shape}, max |onnxruntime - pytorch| = '
          f'{np.abs(got - expected).max():.2e}')


if __name__ == '__main__':
    main()
