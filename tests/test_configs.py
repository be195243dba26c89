"""Every vt-mm config carries what vt-mm needs (configs/_base_/vt_mm_runtime.py), so the
toolboxes' own train tools run it the same way as tools/train.py does."""
import glob
import os.path as osp

import pytest
from helpers import ROOT
from mmengine.config import Config

CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p.split(osp.sep))


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_every_config_inherits_the_runtime(path):
    from vt_mm.engine.hooks import reliability_hooks
    cfg = Config.fromfile(path)
    assert 'vt_mm' in cfg.custom_imports['imports']
    hooks = [h['type'] for h in cfg.get('custom_hooks', [])]
    for hook in reliability_hooks():
        assert hook['type'] in hooks, f'{osp.relpath(path, ROOT)} lacks {hook["type"]}'


def test_readme_own_config_example_builds(tmp_path):
    """README's first own-config example (VT-FPN in mmseg's Semantic FPN) inherits a config
    that mmseg ships and builds; it named a non-existent '-80k_' config before."""
    import re

    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    with open(osp.join(ROOT, 'README.md')) as f:
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
