"""The wheel is complete and works without a clone: vt_mm/.mim/{configs,tools,model-index.yml}
made by the build (setup.py), no tests, metadata without deprecation warnings, and
``_base_ = ['vt_mm::...']`` resolving to the installed configs after ``import vt_mm``."""
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SOURCES = ('vt_mm', 'configs', 'tools', 'pyproject.toml', 'setup.py', 'README.md',
           'model-index.yml')


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp('src')
    for part in SOURCES:
        (shutil.copytree if osp.isdir(osp.join(ROOT, part)) else shutil.copy)(
            osp.join(ROOT, part), osp.join(src, part))
    out = tmp_path_factory.mktemp('wheel')
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                           '--no-build-isolation', '-v', str(src), '-w', str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path, ) = glob.glob(str(out / '*.whl'))
    return path, proc.stdout + proc.stderr


def test_wheel_ships_configs_tools_and_model_index(wheel):
    path, log = wheel
    names = set(zipfile.ZipFile(path).namelist())
    configs = {osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.*'),
                                                      recursive=True)}
    assert configs and {f'vt_mm/.mim/{c}' for c in configs} <= names
    for tool in ('train.py', 'test.py', 'deployment/export_onnx.py',
                 'analysis_tools/benchmark.py', 'analysis_tools/check_data.py'):
        assert f'vt_mm/.mim/tools/{tool}' in names, tool
    assert 'vt_mm/.mim/model-index.yml' in names
    assert not any(n.startswith(('tests/', 'vt_mm/.mim/tests')) for n in names)
    assert not any('__pycache__' in n for n in names)
    assert 'SetuptoolsDeprecationWarning' not in log, log[-3000:]


USER_CHECK = r'''
import os.path as osp, sys
import vt_mm
assert not vt_mm.__file__.startswith(sys.argv[1]), vt_mm.__file__  # the installed copy
from mmengine.config import Config
from mmengine.registry import init_default_scope
for cfg_file, scope, registry in (('seg.py', 'mmseg', 'mmseg.registry'),
                                  ('det.py', 'mmdet', 'mmdet.registry')):
    cfg = Config.fromfile(cfg_file)
    assert cfg.default_scope == scope, cfg.default_scope
    init_default_scope(scope)
    __import__(scope + '.utils', fromlist=['x']).register_all_modules()
    models = __import__(registry, fromlist=['MODELS']).MODELS
    cfg.model.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    if 'decode_head' in cfg.model:
        cfg.model.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.pop('pretrained', None)
    cfg.model.backbone.pop('init_cfg', None)
    model = models.build(cfg.model)
    print(cfg_file, type(model.backbone).__name__, type(getattr(model, 'neck', None)).__name__)
'''


def test_installed_wheel_resolves_package_scope_configs(wheel, tmp_path):
    path, _ = wheel
    site = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target',
                    str(site), path], check=True, capture_output=True)
    user = tmp_path / 'user'
    user.mkdir()
    (user / 'seg.py').write_text(
        "_base_ = ['vt_mm::seaformer/seaformer-tiny_8xb4-160k_ade20k-512x512.py']\n"
        "model = dict(decode_head=dict(num_classes=5))\n")
    (user / 'det.py').write_text("_base_ = ['vt_mm::vtfpn/retinanet_r50_vtfpn_1x_coco.py']\n")
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, '-c', USER_CHECK, ROOT], cwd=user, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'seg.py SeaFormer' in proc.stdout and 'det.py ResNet VTFPN' in proc.stdout
