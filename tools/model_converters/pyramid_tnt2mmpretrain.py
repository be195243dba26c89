"""Convert an official PyramidTNT checkpoint (huawei-noah/Efficient-AI-Backbones) to vt-mm.

    python tools/model_converters/pyramid_tnt2mmpretrain.py SRC DST [--ema] [--trust]

SRC may be a bare state_dict or wrapped in state_dict / state_dict_ema / model, with or without
``module.`` prefixes. DST is an mmpretrain ImageClassifier checkpoint (``backbone.*`` and
``head.fc.*``), usable by the mmpretrain configs in configs/pyramid_tnt/ and, for detection, as
``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from vt_mm.models.backbones.pyramid_tnt import checkpoint_filter_fn  # noqa: E402
from vt_mm.utils.checkpoint import load_checkpoint_file, unwrap_state_dict  # noqa: E402


def convert(state_dict: dict) -> dict:
    """Official keys -> mmpretrain ImageClassifier keys."""
    out = {}
    for k, v in checkpoint_filter_fn(state_dict).items():
        out[('head.fc.' + k[len('head.'):]) if k.startswith('head.') else 'backbone.' + k] = v
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output path')
    parser.add_argument('--ema', action='store_true', help='take state_dict_ema when present')
    parser.add_argument('--trust', action='store_true', help='allow full unpickling of SRC')
    args = parser.parse_args(argv)
    state = unwrap_state_dict(load_checkpoint_file(args.src, args.trust), prefer_ema=args.ema)
    converted = convert(state)
    torch.save(dict(state_dict=converted, meta=dict(converted_from=osp.basename(args.src))), args.dst)
    print(f'[pyramid_tnt2mmpretrain] {len(converted)} tensors -> {args.dst}')


if __name__ == '__main__':
    main()
