"""vt_mm/utils/config_scope.py: ``_base_ = ['vt_mm::DIR/NAME.py']`` from a clone, read as a local
file (no ``_scope_`` tags), and other scopes untouched."""
import os.path as osp

import pytest
from mmengine.config import Config

import vt_mm  # noqa: F401
from vt_mm.utils import config_scope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


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
