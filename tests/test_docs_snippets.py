"""Every config snippet of README.md and docs/*.md runs against the installed toolboxes: each
```python block is written to a file as a user's config, read by mmengine after ``import vt_mm``
(``vt_mm::`` bases resolve to the repository's configs/ in a clone, to ``vt_mm/.mim`` when
installed) and its model is built in the config's toolbox."""
import glob
import os.path as osp
import re

import pytest
from mmengine.config import Config

import vt_mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DOCS = [osp.join(ROOT, 'README.md')] + sorted(glob.glob(osp.join(ROOT, 'docs', '*.md')))


def _snippets():
    found = []
    for path in DOCS:
        with open(path) as f:
            text = f.read()
        for match in re.finditer(r'^```python\n(.*?)^```', text, re.S | re.M):
            line = text.count('\n', 0, match.start()) + 1
            found.append(pytest.param(match.group(1), id=f'{osp.relpath(path, ROOT)}:{line}'))
    return found


SNIPPETS = _snippets()


def test_the_docs_have_config_snippets():
    assert len(SNIPPETS) >= 3  # README: vt_mm:: inheritance, custom_imports, VT-FPN in mmseg


@pytest.mark.parametrize('snippet', SNIPPETS)
def test_config_snippet_builds(snippet, tmp_path):
    from vt_mm.analysis import build_model
    path = tmp_path / 'user_config.py'
    path.write_text(snippet)
    cfg = Config.fromfile(str(path))
    if 'custom_imports' in snippet:
        assert 'vt_mm' in cfg.custom_imports['imports']
    if 'model' not in cfg:
        return  # a fragment for a config of the user's (custom_imports alone)
    # in the config's toolbox, SyncBN as BN (it needs a process group to run, not to be
    # checked), no pretrained weights loaded offline; otherwise the model as written
    model, _, _ = build_model(str(path))
    assert sum(p.numel() for p in model.parameters()) > 0
    for part in re.findall(r"type='(\w+)'", snippet):
        if part in ('VTFPN', 'SeaFormer', 'PyramidTNT', 'VTResNet'):
            assert any(type(m).__name__ == part for m in model.modules()), part
