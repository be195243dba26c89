"""vt_mm/utils/config_scope.py: ``_base_ = ['vt_mm::DIR/NAME.py']`` from a clone, read as a local
file (no ``_scope_`` tags), and other scopes untouched."""
import os
import os.path as osp
import re

import pytest
from helpers import ROOT
from mmengine.config import Config

from vt_mm.utils import config_scope


def test_configs_root_of_a_clone_is_the_repositorys_configs():
    assert not osp.isdir(osp.join(ROOT, 'vt_mm', '.mim', 'configs'))  # a clone, not installed
    assert config_scope.configs_root() == osp.join(ROOT, 'configs')
    assert config_scope._clone_config('vtfpn/a.py') == osp.join(ROOT, 'configs', 'vtfpn', 'a.py')


def test_installed_configs_are_left_to_mmengine(tmp_path, monkeypatch):
    """With vt_mm/.mim/configs present (an installed wheel), mmengine resolves the path."""
    package = tmp_path / 'vt_mm'
    (package / '.mim' / 'configs').mkdir(parents=True)
    (package / 'utils').mkdir()
    monkeypatch.setattr(config_scope, '__file__', str(package / 'utils' / 'config_scope.py'))
    assert config_scope.configs_root() == str(package / '.mim' / 'configs')
    assert config_scope._clone_config('x.py') is None
    (package / '.mim' / 'configs').rmdir()
    assert config_scope.configs_root() == str(tmp_path / 'configs')
    assert config_scope._clone_config('x.py') is None  # no configs/ there either
    (tmp_path / 'configs').mkdir()
    assert config_scope._clone_config('x.py') == str(tmp_path / 'configs' / 'x.py')


def test_vt_mm_scope_reads_the_clones_config_without_scope_tags(tmp_path):
    user = tmp_path / 'user.py'
    user.write_text("_base_ = ['vt_mm::vtfpn/retinanet_r50_vtfpn_1x_coco.py']\n"
                    "model = dict(neck=dict(num_tokens=4))\n")
    cfg = Config.fromfile(str(user))
    assert cfg.model.neck.type == 'VTFPN' and cfg.model.neck.num_tokens == 4
    assert cfg.default_scope == 'mmdet'
    # read as a local file: the vt_mm base adds no _scope_ tag of its own ...
    assert '_scope_' not in cfg.model.neck
    # ... and the toolbox's own base, inherited through it, keeps mmengine's behaviour
    assert cfg.model.backbone.type == 'ResNet'


def test_other_scopes_are_untouched(tmp_path):
    user = tmp_path / 'user.py'
    user.write_text("_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']\n")
    cfg = Config.fromfile(str(user))
    assert cfg.model.get('_scope_') == 'mmdet'


def test_registering_twice_wraps_once():
    from mmengine.config import utils
    before = Config._get_cfg_path
    config_scope.register_config_scope()
    assert Config._get_cfg_path is before and before._vt_mm_scope is True
    assert utils.MODULE2PACKAGE['vt_mm'] == 'vt_mm'


def test_unknown_vt_mm_config_is_named(tmp_path):
    user = tmp_path / 'user.py'
    user.write_text("_base_ = ['vt_mm::no_such_dir/none.py']\n")
    with pytest.raises(FileNotFoundError, match='none.py'):
        Config.fromfile(str(user))


@pytest.fixture
def registered_again(monkeypatch):
    """mmengine as it was before ``import vt_mm`` registered the scope, then registered again
    in the test (import-time code is out of reach of mutation testing otherwise)."""
    from mmengine.config import utils
    wrapped = Config._get_cfg_path
    monkeypatch.setattr(Config, '_get_cfg_path', staticmethod(wrapped.__wrapped__))
    monkeypatch.delitem(utils.MODULE2PACKAGE, 'vt_mm')
    config_scope.register_config_scope()
    yield
    assert Config._get_cfg_path.__wrapped__ is wrapped.__wrapped__


def test_registration_adds_the_scope_and_wraps_the_path_lookup(registered_again, tmp_path,
                                                                monkeypatch):
    from mmengine.config import utils
    assert utils.MODULE2PACKAGE['vt_mm'] == 'vt_mm'
    assert Config._get_cfg_path._vt_mm_scope is True
    # the name is everything after the first '::'
    asked = []
    with monkeypatch.context() as patch:
        patch.setattr(config_scope, '_clone_config', lambda name: asked.append(name) or '/c')
        assert Config._get_cfg_path('vt_mm::a::b.py', 'x.py') == ('/c', None)
    assert asked == ['a::b.py']
    user = str(tmp_path / 'user.py')
    assert Config._get_cfg_path('vt_mm::vtfpn/retinanet_r50_vtfpn_1x_coco.py', user) == (
        osp.join(ROOT, 'configs', 'vtfpn', 'retinanet_r50_vtfpn_1x_coco.py'), None)
    path, scope = Config._get_cfg_path('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', user)
    assert scope == 'mmdet' and path.endswith('retinanet/retinanet_r50_fpn_1x_coco.py')
    assert Config._get_cfg_path('./local.py', user) == (osp.join(str(tmp_path), './local.py'),
                                                        None)
    test_vt_mm_scope_reads_the_clones_config_without_scope_tags(tmp_path)
    test_other_scopes_are_untouched(tmp_path)


def test_an_installed_package_scope_is_read_without_scope_tags(monkeypatch):
    """Where mmengine resolves the path (an installed wheel: no clone configs), the ``vt_mm``
    scope it returns is dropped; other scopes pass through."""
    from mmengine.config import utils
    calls = []

    def mmengine_lookup(cfg_path, filename):
        calls.append((cfg_path, filename))
        return '/site/.mim/configs/x.py', cfg_path.partition('::')[0] or None

    monkeypatch.setattr(config_scope, '_clone_config', lambda relative: None)
    monkeypatch.setattr(Config, '_get_cfg_path', staticmethod(mmengine_lookup))
    monkeypatch.delitem(utils.MODULE2PACKAGE, 'vt_mm')
    config_scope.register_config_scope()
    assert Config._get_cfg_path('vt_mm::x.py', 'u.py') == ('/site/.mim/configs/x.py', None)
    assert Config._get_cfg_path('mmseg::x.py', 'u.py') == ('/site/.mim/configs/x.py', 'mmseg')
    assert calls == [('vt_mm::x.py', 'u.py'), ('mmseg::x.py', 'u.py')]


@pytest.mark.slow  # a tool or a user's program in a process of its own
def test_the_guide_quotes_the_error_of_a_process_without_vt_mm(tmp_path):
    """A process that reads a vt_mm:: base before importing vt_mm (the toolboxes' own train.py)
    fails with mmengine's message; the configs guide quotes it exactly, next to the path
    workaround, whose command prints the folder that holds the configs."""
    import subprocess
    import sys
    config = tmp_path / 'user.py'
    config.write_text("_base_ = ['vt_mm::demo/vtfpn_r50_lip-demo-128x128.py']\n")
    proc = subprocess.run([sys.executable, '-c', 'import sys; from mmengine.config import Config; '
                           'Config.fromfile(sys.argv[1])', str(config)],
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode != 0
    error = proc.stderr.strip().splitlines()[-1]
    with open(osp.join(ROOT, 'docs', 'en', 'user_guides', 'configs.md')) as f:
        guide = f.read()
    assert error == 'AssertionError: mmengine does not support to load vt_mm config.', error
    assert f'\n{error}\n' in guide
    command = re.search(r'```bash\n(python -c "import vt_mm.utils.config_scope[^\n]*)\n', guide)
    command = command.group(1).replace('python', sys.executable, 1)
    # vt_mm importable as where it is installed (a mutation run's copy has no install, and its
    # instrumented code reads mutmut's settings from the copy's root)
    proc = subprocess.run(command, shell=True, capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = proc.stdout.strip().splitlines()[-1]
    assert osp.isfile(osp.join(folder, 'demo', 'vtfpn_r50_lip-demo-128x128.py')), proc.stdout
