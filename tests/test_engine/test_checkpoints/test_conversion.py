"""The converters' command line (vt_mm/engine/checkpoints/conversion.py)."""
import os
import re

import pytest
import torch


class _Payload:

    def __reduce__(self):
        return (os.getcwd, ())


def test_converter_refuses_pickles_unless_trusted(tmp_path):
    """The converters' --trust is the only switch to full unpickling
    (docs/en/user_guides/data.md)."""
    from vt_mm.engine.checkpoints import convert_checkpoint_cli
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'args': _Payload()}, src)
    with pytest.raises(SystemExit, match=r'^\[test\] ERROR: .*rerun with --trust'):
        convert_checkpoint_cli([str(src), str(dst)], 'test', lambda s: s, 'test')
    assert not dst.exists()
    converted = convert_checkpoint_cli([str(src), str(dst), '--trust'], 'test', lambda s: s,
                                       'test')
    assert list(converted) == ['w']
    assert torch.load(dst, weights_only=True)['state_dict']['w'].tolist() == [1.0, 1.0]


def test_converter_cli_arguments_output_and_help(tmp_path, capsys):
    from vt_mm.engine.checkpoints import convert_checkpoint_cli
    src, dst = tmp_path / 'official.pth', tmp_path / 'out.pth'
    torch.save({'state_dict': {'module.w': torch.zeros(2)},
                'state_dict_ema': {'module.w': torch.ones(2)}}, src)
    out = convert_checkpoint_cli([str(src), str(dst), '--ema'], 'desc', lambda s: dict(s),
                                 'conv')
    assert out['w'].tolist() == [1.0, 1.0]
    saved = torch.load(dst, weights_only=True)
    assert list(saved) == ['state_dict', 'meta'] and list(saved['state_dict']) == ['w']
    assert saved['state_dict']['w'].tolist() == [1.0, 1.0]
    assert saved['meta'] == {'converted_from': 'official.pth'}
    assert capsys.readouterr().out == f'[conv] 1 tensors -> {dst}\n'
    convert_checkpoint_cli([str(src), str(dst)], 'desc', lambda s: dict(s), 'conv')
    assert torch.load(dst, weights_only=True)['state_dict']['w'].tolist() == [0.0, 0.0]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        convert_checkpoint_cli(['--help'], 'Line one.\n    indented line two', None, 'conv')
    text = capsys.readouterr().out
    assert 'Line one.\n    indented line two' in text  # the raw formatter keeps the layout
    for arg, help_text in (('src', 'official checkpoint'), ('dst', 'output path'),
                           ('--ema', 'take state_dict_ema when present'),
                           ('--trust', 'allow full unpickling of SRC')):
        assert re.search(rf'{re.escape(arg)}\s+{re.escape(help_text)}\n', text), (arg, text)


def test_the_family_check_sees_the_state_and_a_folder_is_no_output(tmp_path):
    from vt_mm.engine.checkpoints import convert_checkpoint_cli
    src = tmp_path / 'official.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}}, src)
    seen = []
    convert_checkpoint_cli([str(src), str(tmp_path / 'out.pth')], 'test', lambda s: s, 'test',
                           check=lambda state: seen.append(sorted(state)))
    assert seen == [['w']]
    with pytest.raises(SystemExit) as info:
        convert_checkpoint_cli([str(src), str(tmp_path)], 'test', lambda s: s, 'test')
    assert str(info.value) == (f"[test] ERROR: {tmp_path} is a folder; give the output file's "
                               f"path (e.g. {tmp_path / 'official.pth'})")

    def refuse(state):
        raise ValueError('not this family')

    with pytest.raises(SystemExit, match=r'^\[test\] ERROR: not this family$'):
        convert_checkpoint_cli([str(src), str(tmp_path / 'x.pth')], 'test', lambda s: s, 'test',
                               check=refuse)
    assert not (tmp_path / 'x.pth').exists()
