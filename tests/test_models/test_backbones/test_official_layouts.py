"""Each converter takes its own family's official checkpoints only
(vt_mm/models/backbones/official_layouts.py), checked against the authors' key sets in
tests/data: the other family's checkpoint, a converted one or a stranger is refused with what it
looks like, and no output file is written."""
import json
import os.path as osp

import pytest
import torch
from helpers import ROOT

from vt_mm.models.backbones.official_layouts import (
    CheckpointLayoutError,
    identify_layout,
    require_layout,
)


def _official(name):
    with open(osp.join(ROOT, 'tests', 'data', f'{name}_official_state_dicts.json')) as f:
        return json.load(f)


PYRAMID_TNT = _official('pyramid_tnt')


SEAFORMER = _official('seaformer')


def _zeros(shapes):
    return {k: torch.zeros(v) if v else torch.tensor(0) for k, v in shapes.items()}


@pytest.mark.parametrize('name', sorted(PYRAMID_TNT))
def test_every_official_pyramid_tnt_checkpoint_is_recognised(name):
    assert identify_layout(PYRAMID_TNT[name]) == 'PyramidTNT'
    require_layout(PYRAMID_TNT[name], 'PyramidTNT')


@pytest.mark.parametrize('name', sorted(SEAFORMER))
def test_every_official_seaformer_checkpoint_is_recognised(name):
    assert identify_layout(SEAFORMER[name]) == 'SeaFormer'
    require_layout(SEAFORMER[name], 'SeaFormer')


def test_the_other_familys_checkpoint_names_its_converter():
    for name, keys in PYRAMID_TNT.items():
        with pytest.raises(CheckpointLayoutError, match=r'^this looks like an official PyramidTNT '
                           r"checkpoint, not SeaFormer's: convert it with tools/model_converters/"
                           r'pyramid_tnt2mmpretrain\.py$'):
            require_layout(keys, 'SeaFormer')
    for name, keys in SEAFORMER.items():
        with pytest.raises(CheckpointLayoutError, match=r'^this looks like an official SeaFormer '
                           r"checkpoint, not PyramidTNT's: convert it with tools/model_converters/"
                           r'seaformer2vtmm\.py$'):
            require_layout(keys, 'PyramidTNT')


def test_converted_and_strange_checkpoints():
    from vt_mm.models.backbones import PyramidTNT, SeaFormer
    for model in (PyramidTNT('ti'), SeaFormer('t')):
        converted = {'backbone.' + k: v for k, v in model.state_dict().items()}
        assert identify_layout(converted) == 'vt-mm'
        with pytest.raises(CheckpointLayoutError, match=r'^this is already a vt-mm checkpoint'):
            require_layout(converted, 'SeaFormer')
    resnet = {'conv1.weight': 0, 'layer1.0.conv1.weight': 0, 'fc.weight': 0, 'fc.bias': 0}
    assert identify_layout(resnet) is None
    with pytest.raises(CheckpointLayoutError, match=r"^this is not an official PyramidTNT "
                       r"checkpoint: 4 of its 4 keys are not PyramidTNT's \(conv1\.weight, "
                       r'layer1\.0\.conv1\.weight, fc\.weight \.\.\. \(\+1 more\)\)\. '
                       r'tools/model_converters/pyramid_tnt2mmpretrain\.py converts'):
        require_layout(resnet, 'PyramidTNT')
    with pytest.raises(CheckpointLayoutError, match='it holds no weights'):
        require_layout({}, 'SeaFormer')
    # one stray key among official ones: still not the family's layout, and named
    mixed = dict(PYRAMID_TNT['ptnt_ti_patch16_192_in1k_cls'], **{'fc.weight': [2]})
    with pytest.raises(CheckpointLayoutError, match=r"1 of its 326 keys are not PyramidTNT's "
                       r'\(fc\.weight\)'):
        require_layout(mixed, 'PyramidTNT')
    # the characteristic key must be there: head and norm alone are not a PyramidTNT
    assert identify_layout({'head.weight': 0, 'norm.weight': 0}) is None


def test_layout_boundaries_and_messages_in_full():
    # a vt-mm key is backbone.<vt-mm name>.<more>: two dots at least, under backbone.
    assert identify_layout({'backbone.norm0.weight': 0}) == 'vt-mm'
    assert identify_layout({'backbone.norm0': 0}) is None
    assert identify_layout({'model.stem.conv.weight': 0}) is None
    assert identify_layout({'backbone.layer1.conv.weight': 0}) is None
    with pytest.raises(CheckpointLayoutError) as info:
        require_layout({'backbone.stem.0.weight': 0}, 'PyramidTNT')
    assert str(info.value) == (
        "this is already a vt-mm checkpoint (backbone.* keys with vt-mm's names): load it as it "
        'is (load_from, or init_cfg=dict(type="Pretrained", ...)); there is nothing to convert '
        'with tools/model_converters/pyramid_tnt2mmpretrain.py')
    with pytest.raises(CheckpointLayoutError) as info:
        require_layout({}, 'SeaFormer')
    assert str(info.value).startswith('this is not an official SeaFormer checkpoint: it holds no '
                                      'weights. ')
    # up to three strangers are listed in full; the fourth makes a count
    three = {'a.weight': 0, 'b.weight': 0, 'c.weight': 0, 'smb1.conv.weight': 0}
    with pytest.raises(CheckpointLayoutError, match=r"3 of its 4 keys are not SeaFormer's "
                       r'\(a\.weight, b\.weight, c\.weight\)\. '):
        require_layout(three, 'SeaFormer')


@pytest.mark.parametrize('tool,other', [('seaformer2vtmm', 'ptnt_ti_patch16_192_in1k_cls'),
                                        ('pyramid_tnt2mmpretrain', 'SeaFormer_T_in1k_cls')])
def test_converter_cli_refuses_the_other_family_and_writes_nothing(tool, other, tmp_path,
                                                                    capsys):
    import importlib
    shapes = PYRAMID_TNT.get(other) or SEAFORMER[other]
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save({'state_dict': _zeros(shapes)}, src)
    module = importlib.import_module(f'tools.model_converters.{tool}')
    with pytest.raises(SystemExit) as info:
        module.main([str(src), str(dst)])
    assert str(info.value).startswith(f'[{tool}] ERROR: this looks like an official ')
    assert not dst.exists()


@pytest.mark.parametrize('tool', ['seaformer2vtmm', 'pyramid_tnt2mmpretrain'])
def test_converter_cli_names_bad_files_and_outputs(tool, tmp_path):
    import importlib
    module = importlib.import_module(f'tools.model_converters.{tool}')
    (tmp_path / 'empty.pth').write_bytes(b'')
    (tmp_path / 'text.pth').write_text('<html>not found</html>')
    good = tmp_path / 'good.pth'
    shapes = SEAFORMER['SeaFormer_T_in1k_cls'] if tool.startswith('sea') else \
        PYRAMID_TNT['ptnt_ti_patch16_192_in1k_cls']
    torch.save({'state_dict': _zeros(shapes)}, good)
    cases = [([str(tmp_path / 'missing.pth'), str(tmp_path / 'o.pth')], 'missing.pth: no such '
              'file'),
             ([str(tmp_path / 'empty.pth'), str(tmp_path / 'o.pth')], 'is empty (0 bytes)'),
             ([str(tmp_path / 'text.pth'), str(tmp_path / 'o.pth')], 'is not a PyTorch '
              "checkpoint (it starts with b'<html>not found<'"),
             ([str(good), str(tmp_path)], f'{tmp_path} is a folder; give the output file\'s path')]
    for argv, message in cases:
        with pytest.raises(SystemExit) as info:
            module.main(argv)
        assert str(info.value).startswith(f'[{tool}] ERROR: ') and message in str(info.value)
    assert not (tmp_path / 'o.pth').exists()
    module.main([str(good), str(tmp_path / 'o.pth')])  # the family's own checkpoint converts
    assert (tmp_path / 'o.pth').is_file()
