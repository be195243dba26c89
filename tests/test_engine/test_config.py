"""Configs as the tools read them (vt_mm/engine/config.py): the toolbox, syntax errors with file
and line, --cfg-options values that keep their spaces."""

import pytest
from helpers import DEMO_CONFIG
from mmengine.config import Config

from vt_mm.engine import config


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet', 'mmpretrain'])
def test_toolbox_of_accepts_the_three_toolboxes(scope):
    assert config.toolbox_of(Config(dict(default_scope=scope))) == scope


@pytest.mark.parametrize('scope', [None, 'mmcls', 'mmengine', 'MMSEG'])
def test_toolbox_of_refuses_other_scopes(scope):
    with pytest.raises(ValueError, match=rf"^config default_scope is {scope!r}; vt-mm's tools "
                       r"handle 'mmseg', 'mmdet' and 'mmpretrain' configs \(inherit from one of "
                       r'their base configs\)$'):
        config.toolbox_of(Config(dict(default_scope=scope) if scope else dict()))


def test_load_config_sets_the_launcher_and_refuses_an_unknown_toolbox(tmp_path):
    cfg = config.load_config(DEMO_CONFIG, None, 'pytorch',
                              None)
    assert cfg.launcher == 'pytorch'
    # the work dir: the argument, else the config's, else ./work_dirs/<config name>
    assert cfg.work_dir == './work_dirs/vtfpn_r50_lip-demo-128x128'
    assert config.load_config(DEMO_CONFIG, {'work_dir': 'w1'}, 'none', None).work_dir == 'w1'
    assert config.load_config(DEMO_CONFIG, {'work_dir': 'w1'}, 'none', 'w2').work_dir == 'w2'
    plain = tmp_path / 'plain.py'
    plain.write_text('model = dict(type="X")\n')
    with pytest.raises(ValueError, match='default_scope is None'):
        config.load_config(str(plain), None, 'none', None)
    # the toolbox check comes after the options: an option can set it
    cfg = config.load_config(str(plain), {'default_scope': 'mmseg'}, 'none', 'w')
    assert cfg.default_scope == 'mmseg' and cfg.work_dir == 'w'


def test_walk_yields_every_path():
    tree = {'a': {'b': [1, {'c': 2}]}, 'd': (3, )}
    assert [p for p, _, _ in config.walk_config(tree)] == ['a', 'a.b', 'a.b[0]', 'a.b[1]',
                                                      'a.b[1].c', 'd', 'd[0]']
    assert all(parent[key] is not None for _, parent, key in config.walk_config(tree))


def test_config_syntax_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text("model = dict(\n    type='EncoderDecoder',\n    backbone=dict(type='X'\n")
    with pytest.raises(config.ConfigSyntaxError) as info:
        config.read_config(str(bad))
    assert str(info.value) == (f"config {bad}, line 3: '(' was never closed:\n"
                               "        backbone=dict(type='X'")
    base = tmp_path / 'base.py'
    base.write_text('x = 1\ny = = 2\n')
    child = tmp_path / 'child.py'
    child.write_text("_base_ = ['./base.py']\nz = 3\n")
    with pytest.raises(config.ConfigSyntaxError, match=rf'^config {base}, line 2: invalid '
                       r'syntax:\n    y = = 2$'):
        config.read_config(str(child))
    with pytest.raises(config.ConfigSyntaxError, match=r'no_such\.py: no such file'):
        config.read_config(str(tmp_path / 'no_such.py'))
    # a base in another folder, named relative to the child; an unresolvable base before it
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    (tmp_path / 'b' / 'base.py').write_text('x = (\n')
    nested = tmp_path / 'a' / 'child.py'
    nested.write_text("_base_ = ['nosuch::x/y.py', '../b/base.py']\n")
    found = config._first_syntax_error(str(nested))
    assert found.filename == str(tmp_path / 'b' / 'base.py') and found.lineno == 1
    assert config._first_syntax_error(str(child)).filename == str(base)
    assert config._first_syntax_error(str(tmp_path / 'a' / 'none.py')) is None
    # bases that name each other: read once each, no error, no endless recursion
    (tmp_path / 'c1.py').write_text("_base_ = ['./c2.py']\n")
    (tmp_path / 'c2.py').write_text("_base_ = ['./c1.py']\nx = 1\n")
    assert config._first_syntax_error(str(tmp_path / 'c1.py')) is None


def test_syntax_errors_mmengine_gives_without_a_file_or_a_line_text(tmp_path, monkeypatch):
    """Where no file of the inheritance fails to parse (the error came from elsewhere), the
    message is mmengine's own; an error without the line's text ends at the message."""
    path = str(tmp_path / 'x.py')
    error = SyntaxError('bad thing')
    monkeypatch.setattr(config, '_first_syntax_error', lambda p: None)
    assert str(config._syntax_error_in(path, error)) == f'config {path}: bad thing'
    found = SyntaxError('invalid syntax', ('/c/base.py', 4, 1, None))
    monkeypatch.setattr(config, '_first_syntax_error', lambda p: found)
    assert str(config._syntax_error_in(path, error)) == 'config /c/base.py, line 4: invalid syntax'


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_tools_print_config_errors_as_one_line(tool, tmp_path):
    import importlib
    bad = tmp_path / 'bad.py'
    bad.write_text('a = [1,\n')
    module = importlib.import_module(f'tools.{tool}')
    with pytest.raises(SystemExit, match=rf"^ERROR: config {bad}, line 1: '\[' was never "
                       'closed'):
        module.main([str(bad)] + (['ckpt.pth'] if tool == 'test' else []))


@pytest.mark.parametrize('text,value', [
    ('/data/my dataset', '/data/my dataset'), ('  spaced  ', 'spaced'), ("'quoted x'", 'quoted x'),
    ('1', 1), ('-2.5', -2.5), ('True', True), ('None', None), ('a,b', ['a', 'b']),
    ('[a b, c]', ['a b', 'c']), ('(1, 2)', (1, 2)), ('(1,)', (1, )), ('[]', []),
    ('[[1, 2], (3, x y)]', [[1, 2], (3, 'x y')]), ('1,', [1]),
    ('a,[1,(2,3)],b', ['a', [1, (2, 3)], 'b']), ('X1,Y2', ['X1', 'Y2']),
    # commas inside brackets of a plain value keep it whole (this recursed without end)
    ('run(1, 2)', 'run(1, 2)'), ('f(1, 2),g', ['f(1, 2)', 'g']),
    # brackets at one end only: a plain value
    ('[a]b', '[a]b'), ('b[a]', 'b[a]'), ('(a)b', '(a)b')])
def test_option_values_keep_their_spaces(text, value):
    assert config.parse_option_value(text) == value


def test_cfg_options_action_parses_each_value():
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=config.ConfigOptionsAction)
    args = parser.parse_args(['--cfg-options', 'data_root=/data/my dataset', 'k=[1, 2]'])
    assert args.cfg_options == {'data_root': '/data/my dataset', 'k': [1, 2]}


def test_option_values_with_unbalanced_brackets_are_refused():
    with pytest.raises(ValueError, match=r"value '\[1, 2' has unbalanced brackets"):
        config.parse_option_value('[1, 2')


def test_cfg_options_with_spaces_reach_the_config(tmp_path):
    import importlib
    train = importlib.import_module('tools.train')
    args = train.parse_args([DEMO_CONFIG, '--cfg-options',
                             'train_dataloader.dataset.data_root=/data/my lip',
                             'model.neck.num_tokens=4'])
    cfg = train.build_config(args)
    assert cfg.train_dataloader.dataset.data_root == '/data/my lip'
    assert cfg.model.neck.num_tokens == 4
