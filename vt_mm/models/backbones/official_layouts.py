"""The authors' checkpoint layouts, so that each converter takes its own family only.

A converter renames what it recognises and would pass anything else through: given the other
family's checkpoint it wrote a file that loaded as ``init_cfg=Pretrained`` with one tensor in
hundreds changed. :func:`require_layout` refuses such input before anything is written and says
what it looks like instead.

Example:
    >>> require_layout({'patch_embed.proj.weight': None, 'head.weight': None}, 'SeaFormer')
    Traceback (most recent call last):
    ...
    vt_mm.models.backbones.official_layouts.CheckpointLayoutError: this looks like an official ...
"""
import re
from typing import Iterable, List, Optional

__all__ = ['CheckpointLayoutError', 'LAYOUTS', 'identify_layout', 'require_layout']


class CheckpointLayoutError(ValueError):
    """A checkpoint that is not the converter's family."""


# family -> (the converter, a pattern every key of an official checkpoint matches, a prefix one
# of its keys must have). From the authors' checkpoints (tests/data/*_official_state_dicts.json):
# PyramidTNT's classifiers (huawei-noah/Efficient-AI-Backbones), SeaFormer's classifiers
# (timm style) and segmentors (mmseg style, backbone.* / decode_head.*).
LAYOUTS = {
    'PyramidTNT': ('tools/model_converters/pyramid_tnt2mmpretrain.py',
                   re.compile(r'^(patch_embed|outer_pos|inner_pos|stages|word_merges|'
                              r'sentence_merges|norm|head)(\.|$)'), ('patch_embed.', )),
    'SeaFormer': ('tools/model_converters/seaformer2vtmm.py',
                  re.compile(r'^((backbone\.)?(smb\d+|trans\d+)\.|linear\.|decode_head\.)'),
                  ('smb1.', 'backbone.smb1.')),
}
# the first name after ``backbone.`` in checkpoints vt-mm's configs write (already converted)
_VT_MM_BACKBONE_NAMES = ('stem', 'mv2_stages', 'sea_stages', 'sentence_pos', 'word_pos',
                         'upsamples', 'vt_modules', 'norm0', 'norm1', 'norm2', 'norm3')


def identify_layout(keys: Iterable[str]) -> Optional[str]:
    """'PyramidTNT' or 'SeaFormer' for an official checkpoint's keys, 'vt-mm' for one that
    vt-mm's converters or configs wrote, else None."""
    keys = list(keys)
    for family, (_, pattern, required) in LAYOUTS.items():
        if keys and all(pattern.match(k) for k in keys) and any(
                k.startswith(required) for k in keys):
            return family
    if any(k.startswith('backbone.') and k.split('.')[1] in _VT_MM_BACKBONE_NAMES
           for k in keys if k.count('.') >= 2):
        return 'vt-mm'
    return None


def _strangers(keys: List[str], family: str, shown: int = 3) -> str:
    pattern = LAYOUTS[family][1]
    odd = [k for k in keys if not pattern.match(k)]
    listed = ', '.join(odd[:shown]) + (f' ... (+{len(odd) - shown} more)' if len(odd) > shown
                                       else '')
    return f'{len(odd)} of its {len(keys)} keys are not {family}\'s ({listed})'


def require_layout(state: dict, family: str) -> None:
    """Raises :class:`CheckpointLayoutError` unless ``state`` (a state_dict) is an official
    checkpoint of ``family``, naming what it looks like and what to do instead."""
    keys = list(state)
    found = identify_layout(keys)
    if found == family:
        return
    converter = LAYOUTS[family][0]
    if found in LAYOUTS:
        raise CheckpointLayoutError(
            f'this looks like an official {found} checkpoint, not {family}\'s: convert it with '
            f'{LAYOUTS[found][0]}')
    if found == 'vt-mm':
        raise CheckpointLayoutError(
            'this is already a vt-mm checkpoint (backbone.* keys with vt-mm\'s names): load it '
            'as it is (load_from, or init_cfg=dict(type="Pretrained", ...)); there is nothing to '
            f'convert with {converter}')
    detail = _strangers(keys, family) if keys else 'it holds no weights'
    raise CheckpointLayoutError(f'this is not an official {family} checkpoint: {detail}. '
                                f'{converter} converts the authors\' {family} checkpoints only')
