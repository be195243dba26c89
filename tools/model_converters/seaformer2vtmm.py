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


from vt_mm.engine.checkpoints import convert_checkpoint_cli
from vt_mm.models.backbones.official_layouts import require_layout
from vt_mm.models.backbones.seaformer import checkpoint_filter_fn, convert_head_keys


def convert(state_dict: dict) -> dict:
    """Official keys -> mmseg EncoderDecoder / mmpretrain ImageClassifier keys: the backbone's
    own keys (``checkpoint_filter_fn``) under ``backbone.``, plus the head."""
    out = {'backbone.' + k: v for k, v in checkpoint_filter_fn(state_dict).items()}
    out.update(convert_head_keys(state_dict))
    return out


def main(argv=None):
    converted = convert_checkpoint_cli(argv, __doc__, convert, 'seaformer2vtmm',
                                       check=lambda state: require_layout(state, 'SeaFormer'))
    kind = 'segmentation' if any(k.startswith('decode_head.') for k in converted) else \
        'classification'
    print(f'[seaformer2vtmm] {kind} checkpoint')


if __name__ == '__main__':
    main()
