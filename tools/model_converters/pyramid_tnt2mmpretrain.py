"""Convert an official PyramidTNT checkpoint (huawei-noah/Efficient-AI-Backbones) to vt-mm.

    python tools/model_converters/pyramid_tnt2mmpretrain.py SRC DST [--ema] [--trust]

SRC may be a bare state_dict or wrapped in state_dict / state_dict_ema / model, with or without
``module.`` prefixes. DST is an mmpretrain ImageClassifier checkpoint (``backbone.*`` and
``head.fc.*``), usable by the mmpretrain configs in configs/pyramid_tnt/ and, for detection, as
``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.
"""


from vt_mm.engine.checkpoints import convert_checkpoint_cli
from vt_mm.models.backbones.official_layouts import require_layout
from vt_mm.models.backbones.pyramid_tnt import checkpoint_filter_fn


def convert(state_dict: dict) -> dict:
    """Official keys -> mmpretrain ImageClassifier keys: the backbone's own keys
    (``checkpoint_filter_fn``) under ``backbone.``, the classifier ``head.*`` as ``head.fc.*``."""
    out = {'backbone.' + k: v for k, v in checkpoint_filter_fn(state_dict).items()}
    out.update({'head.fc.' + k[len('head.'):]: v for k, v in state_dict.items()
                if k.startswith('head.')})
    return out


def main(argv=None):
    convert_checkpoint_cli(argv, __doc__, convert, 'pyramid_tnt2mmpretrain',
                           check=lambda state: require_layout(state, 'PyramidTNT'))


if __name__ == '__main__':
    main()
