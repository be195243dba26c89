"""The wheel is complete and works without a clone: vt_mm/.mim/{configs,tools,model-index.yml}
made by the build (setup.py), the licence and links, nothing from dev/, benchmarks/ or tests,
metadata without deprecation warnings, and
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


def _repository_files():
    """The files of the clone as git lists them (tracked and new, not ignored): the wheel is
    built from a copy of all of it, so that what it leaves out is left out by the build."""
    from helpers import repository_files
    return repository_files()


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp('src')
    for rel in _repository_files():
        os.makedirs(osp.dirname(osp.join(src, rel)), exist_ok=True)
        shutil.copy(osp.join(ROOT, rel), osp.join(src, rel))
    out = tmp_path_factory.mktemp('wheel')
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                           '--no-build-isolation', '-v', str(src), '-w', str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path, ) = glob.glob(str(out / '*.whl'))
    return path, proc.stdout + proc.stderr


def test_wheel_ships_configs_tools_and_model_index(wheel):
    """What must be in the wheel (the package, every config and user tool, model-index, the
    licence, the project's links) and what must not (dev/, benchmarks/, docs/, tests/)."""
    path, log = wheel
    archive = zipfile.ZipFile(path)
    names = set(archive.namelist())
    configs = {osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.*'),
                                                      recursive=True)}
    assert configs and {f'vt_mm/.mim/{c}' for c in configs} <= names
    tools = {osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'tools', '**', '*.*'),
                                                    recursive=True) if '__pycache__' not in p}
    assert {'tools/train.py', 'tools/test.py', 'tools/deployment/export.py',
            'tools/analysis_tools/benchmark.py'} <= tools
    assert {f'vt_mm/.mim/{t}' for t in tools} <= names
    assert 'vt_mm/.mim/model-index.yml' in names
    for folder in ('dev/', 'benchmarks/', 'docs/', 'tests/'):
        shipped = [n for n in names if n.startswith((folder, f'vt_mm/.mim/{folder}'))]
        assert shipped == [], shipped
    assert not any('__pycache__' in n for n in names)
    (licence, ) = [n for n in names if n.endswith('.dist-info/licenses/LICENSE')]
    assert 'Apache License' in archive.read(licence).decode()
    (metadata, ) = [n for n in names if n.endswith('.dist-info/METADATA')]
    meta = archive.read(metadata).decode()
    assert 'License-Expression: Apache-2.0' in meta
    urls = dict(line.split(': ', 1)[1].split(', ', 1) for line in meta.splitlines()
                if line.startswith('Project-URL: '))
    assert {'Homepage', 'Documentation', 'Source'} <= set(urls), urls
    assert 'SetuptoolsDeprecationWarning' not in log, log[-3000:]


USER_CHECK = r'''
import os.path as osp, sys
import vt_mm
assert not vt_mm.__file__.startswith(sys.argv[1]), vt_mm.__file__  # the installed copy
from vt_mm.analysis import build_model
for cfg_file, scope in (('seg.py', 'mmseg'), ('det.py', 'mmdet')):
    model, cfg, toolbox = build_model(cfg_file)  # BN for SyncBN, no pretrained weights
    assert cfg.default_scope == scope == toolbox, cfg.default_scope
    print(cfg_file, type(model.backbone).__name__, type(getattr(model, 'neck', None)).__name__)
'''


@pytest.fixture(scope='module')
def installed(wheel, tmp_path_factory):
    """The wheel installed into a directory of its own (put on PYTHONPATH, no clone on it)."""
    site = tmp_path_factory.mktemp('site')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target',
                    str(site), wheel[0]], check=True, capture_output=True)
    return site


def test_installed_wheel_resolves_package_scope_configs(installed, tmp_path):
    site = installed
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


def _model_names():
    import yaml
    names = []
    for metafile in glob.glob(osp.join(ROOT, 'configs', '*', 'metafile.yml')):
        with open(metafile) as f:
            names += [m['Name'] for m in yaml.safe_load(f)['Models']]
    return names


MIM_LOOKUP = r'''
import os.path as osp, sys
from mim.commands.search import get_model_info
from mim.utils import get_installed_path
info = get_model_info('vt_mm', shown_fields=['config'], to_dict=True)
root = get_installed_path('vt_mm')
assert root.startswith(sys.argv[1]), root
missing = [n for n, i in info.items() if not osp.isfile(osp.join(root, '.mim', i['config']))]
assert not missing, missing
print('configs found:', len(info))
'''


@pytest.mark.slow
def test_mim_search_train_and_test_from_an_installed_wheel(installed, tmp_path):
    """openmim (requirements/tools-nodeps.txt) on a plain install, outside the repository:
    ``mim search vt_mm`` lists every model of the metafiles, the lookup behind ``mim download``
    finds each model's config under ``vt_mm/.mim``, and ``mim train`` / ``mim test`` run vt-mm's
    installed tools on a config given by name (the VT-FPN demo, shrunk, on generated data)."""
    from vt_mm.datasets import make_demo_lip
    make_demo_lip(str(tmp_path / 'data' / 'LIP_demo'), num_train=4, num_val=2, size=96, seed=0)
    env = dict(os.environ, PYTHONPATH=str(installed))

    def mim(*args):
        proc = subprocess.run([sys.executable, '-m', 'mim', *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-5000:]
        return out

    listed = mim('search', 'vt_mm')
    names = _model_names()
    assert len(names) >= 10
    missing = [n for n in names if f'config id: {n}\n' not in listed]
    assert not missing, missing
    proc = subprocess.run([sys.executable, '-c', MIM_LOOKUP, str(installed)], cwd=tmp_path,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and f'configs found: {len(names)}' in proc.stdout, proc.stderr

    options = ['--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
               'model.backbone.depth=18', 'model.neck.in_channels=[64,128,256,512]',
               'model.neck.token_channels=64', 'train_dataloader.batch_size=2']
    for loader in ('train', 'val', 'test'):
        options += [f'{loader}_dataloader.num_workers=0',
                    f'{loader}_dataloader.persistent_workers=False']
    demo = 'demo/vtfpn_r50_lip-demo-128x128.py'
    out = mim('train', 'vt_mm', demo, '--work-dir', 'work', *options)
    assert str(installed / 'vt_mm' / '.mim' / 'tools' / 'train.py') in out
    assert 'Iter(train) [2/2]' in out and 'mIoU' in out, out[-3000:]
    out = mim('test', 'vt_mm', demo, '--checkpoint', 'work/iter_2.pth',
              '--work-dir', 'test', *options)
    assert str(installed / 'vt_mm' / '.mim' / 'tools' / 'test.py') in out
    assert 'Iter(test) [2/2]' in out and 'mIoU' in out, out[-3000:]


def test_scripts_import_vt_mm_as_a_package():
    """The scripts of tools/, benchmarks/ and dev/ import vt_mm as an installed or PYTHONPATH
    package, as OpenMMLab's tools do: none edits sys.path."""
    edits = []
    for folder in ('tools', 'benchmarks', 'dev'):
        for path in glob.glob(osp.join(ROOT, folder, '**', '*.py'), recursive=True):
            with open(path) as f:
                edits += [f'{osp.relpath(path, ROOT)}:{i}' for i, line in enumerate(f, 1)
                          if 'sys.path.insert' in line or 'sys.path.append' in line]
    assert edits == []


@pytest.mark.slow  # about 25 programs, each importing the toolboxes: a minute on 2 cores
def test_every_script_starts_as_a_program():
    """Every script of tools/, benchmarks/ and dev/ runs as its docs say (``python SCRIPT``
    from the repository, vt_mm on PYTHONPATH): ``--help`` exits 0. Imports a test's module
    loader would satisfy can fail here: mmsegmentation and model-index install a ``tests``
    package into site-packages, which hides this repository's tests/ from ``import tests...``
    (benchmarks/compile_benchmark.py failed so)."""
    from concurrent.futures import ThreadPoolExecutor
    scripts = []
    for folder in ('tools', 'benchmarks', 'dev'):
        for path in sorted(glob.glob(osp.join(ROOT, folder, '**', '*.py'), recursive=True)):
            with open(path) as f:
                if "if __name__ == '__main__':" in f.read():
                    scripts.append(osp.relpath(path, ROOT))
    assert len(scripts) > 20 and 'benchmarks/compile_benchmark.py' in scripts

    def run(script):
        env = dict(os.environ, PYTHONPATH=ROOT)
        done = subprocess.run([sys.executable, script, '--help'], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        return script, done.returncode, done.stderr[-600:]

    with ThreadPoolExecutor(2) as pool:
        failed = [r for r in pool.map(run, scripts) if r[1] != 0]
    assert failed == []
