"""Convert an official PyramidTNT checkpoint (huawei-noah/Efficient-AI-Backbones) to vt-mm.

    python tools/model_converters/pyramid_tnt2mmpretrain.py SRC DST [--ema] [--trust]

SRC may be a bare state_dict or wrapped in state_dict / state_dict_ema / model, with or without
``module.`` prefixes. DST is an mmpretrain ImageClassifier checkpoint (``backbone.*`` and
``head.fc.*``), usable by the mmpretrain configs in configs/pyramid_tnt/ and, for detection, as
``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.
"""


from vt_mm.models.backbones.pyramid_tnt import checkpoint_filter_fn
from vt_mm.utils.checkpoint import convert_checkpoint_cli


def convert(state_dict: dict) -> dict:
    """Official keys -> mmpretrain ImageClassifier keys."""
    out = {}
    for k, v in checkpoint_filter_fn(state_dict).items():
        out[('head.fc.' + k[len('head.'):]) if k.startswith('head.') else 'backbone.' + k] = v
    return out


def main(argv=None):
    convert_checkpoint_cli(argv, __doc__, convert, 'pyramid_tnt2mmpretrain')


if __name__ == '__main__':
    main()
