"""Convert an official SeaFormer checkpoint (fudan-zvg/SeaFormer) to vt-mm.

    python tools/model_converters/seaformer2vtmm.py SRC DST [--ema] [--trust]

SRC is either
* a segmentation checkpoint (mmcv style ``{'state_dict': {backbone.*, decode_head.*}}``): DST
  is an mmseg ``EncoderDecoder`` checkpoint for configs/seaformer/*ade20k*.py / *cityscapes*.py;
* a classification checkpoint (timm style ``state_dict`` / ``state_dict_ema`` with the backbone
  keys unprefixed plus ``linear.*``): DST is an mmpretrain ``ImageClassifier`` checkpoint for
  configs/seaformer/*in1k.py, and its backbone initialises segmentation training with
  ``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from vt_mm.models.backbones.seaformer import checkpoint_filter_fn  # noqa: E402
from vt_mm.utils.checkpoint import load_checkpoint_file, unwrap_state_dict  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output path')
    parser.add_argument('--ema', action='store_true', help='take state_dict_ema when present')
    parser.add_argument('--trust', action='store_true', help='allow full unpickling of SRC')
    args = parser.parse_args(argv)
    state = unwrap_state_dict(load_checkpoint_file(args.src, args.trust), prefer_ema=args.ema)
    converted = checkpoint_filter_fn(state)
    kind = 'segmentation' if any(k.startswith('decode_head.') for k in converted) else \
        'classification'
    torch.save(dict(state_dict=converted, meta=dict(converted_from=osp.basename(args.src))),
               args.dst)
    print(f'[seaformer2vtmm] {kind} checkpoint, {len(converted)} tensors -> {args.dst}')


if __name__ == '__main__':
    main()
