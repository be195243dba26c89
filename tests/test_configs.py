"""Every vt-mm config carries what vt-mm needs (configs/_base_/vt_mm_runtime.py), so the
toolboxes' own train tools run it the same way as tools/train.py does."""
import functools
import glob
import os.path as osp

import pytest
from helpers import MOVED_CONFIGS as MOVED
from helpers import ROOT
from mmengine.config import Config

CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p.split(osp.sep))


@functools.lru_cache(maxsize=None)
def _read(path: str) -> Config:
    """A repository config, read once per test process (each read parses the toolboxes' base
    configs: about half a second)."""
    return Config.fromfile(path)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_every_config_inherits_the_runtime(path):
    from vt_mm.engine.hooks import reliability_hooks
    cfg = _read(path)
    assert 'vt_mm' in cfg.custom_imports['imports']
    hooks = [h['type'] for h in cfg.get('custom_hooks', [])]
    for hook in reliability_hooks():
        assert hook['type'] in hooks, f'{osp.relpath(path, ROOT)} lacks {hook["type"]}'


def test_configs_guide_own_config_example_builds(tmp_path):
    """The configs guide's own-config example (VT-FPN in mmseg's Semantic FPN) inherits a
    config that mmseg ships and builds in mmseg."""
    import re

    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    with open(osp.join(ROOT, 'docs', 'en', 'user_guides', 'configs.md')) as f:
        readme = f.read()
    block = next(b for b in re.findall(r'```python\n(.*?)```', readme, re.S)
                 if "type='VTFPN'" in b and '_base_' in b)
    path = tmp_path / 'readme_vtfpn.py'
    path.write_text(block)
    cfg = Config.fromfile(str(path))
    assert cfg.model.neck.type == 'VTFPN'
    init_default_scope('mmseg')
    cfg.model.pretrained = None
    cfg.model.backbone.norm_cfg = cfg.model.decode_head.norm_cfg = dict(type='BN')
    model = MODELS.build(cfg.model)
    assert type(model.neck).__name__ == 'VTFPN'


SHIPPED = [p for p in CONFIGS if osp.relpath(p, ROOT) not in MOVED]


@pytest.mark.parametrize('old,new', sorted(MOVED.items()))
def test_old_config_paths_keep_working(old, new):
    """`python tools/train.py configs/vtfpn_lip.py` (the users' own command) reads the same
    config as its new path, and the file says where that is."""
    moved = Config.fromfile(osp.join(ROOT, old))
    target = _read(osp.join(ROOT, new))
    assert moved.to_dict() == target.to_dict()
    with open(osp.join(ROOT, old)) as f:
        assert new in f.read()


def test_configs_follow_the_layout():
    """Every config is in its family's folder (none at the root but the moved paths), each
    folder has a README naming every model of its metafile, and the metafile's README field
    names that README; model-index.yml imports every metafile."""
    import yaml
    assert all(osp.relpath(p, ROOT).count('/') == 2 for p in SHIPPED), [
        osp.relpath(p, ROOT) for p in SHIPPED if osp.relpath(p, ROOT).count('/') != 2]
    folders = sorted({osp.dirname(osp.relpath(p, ROOT)) for p in SHIPPED})
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        imports = yaml.safe_load(f)['Import']
    assert sorted(imports) == [f'{d}/metafile.yml' for d in folders]
    listed = set()
    for folder in folders:
        with open(osp.join(ROOT, folder, 'metafile.yml')) as f:
            meta = yaml.safe_load(f)
        with open(osp.join(ROOT, folder, 'README.md')) as f:
            readme = f.read()
        assert [c['README'] for c in meta['Collections']] == [f'{folder}/README.md']
        for model in meta['Models']:
            assert model['Name'] == osp.splitext(osp.basename(model['Config']))[0]
            assert f'[{model["Name"]}]({osp.basename(model["Config"])})' in readme
            listed.add(model['Config'])
    assert listed == {osp.relpath(p, ROOT) for p in SHIPPED}, sorted(
        listed ^ {osp.relpath(p, ROOT) for p in SHIPPED})


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: osp.relpath(p, ROOT))
def test_every_shipped_config_inherits_by_package_scope(path, tmp_path):
    """A user's `_base_ = ['vt_mm::DIR/NAME.py']` reads the shipped config."""
    import vt_mm  # noqa: F401  (registers the vt_mm:: scope)
    rel = osp.relpath(path, osp.join(ROOT, 'configs'))
    user = tmp_path / 'user.py'
    user.write_text(f"_base_ = ['vt_mm::{rel}']\n")
    assert Config.fromfile(str(user)).to_dict() == _read(path).to_dict()
