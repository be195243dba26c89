"""Fixtures shared by the test modules (instead of tests importing each other)."""
import os.path as osp

import pytest
from helpers import DEMO_CONFIG

import vt_mm  # noqa: F401  (every test needs vt-mm's modules registered in the toolboxes)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CFG = DEMO_CONFIG

# The demo config with a ResNet-18 and narrow tokens, so that a few iterations take seconds.
TINY_CONFIG = """
_base_ = [{demo!r}]
data_root = {root!r}
model = dict(backbone=dict(depth=18), neck=dict(in_channels=[64, 128, 256, 512], token_channels=64))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
randomness = dict(seed=0)
"""


@pytest.fixture(autouse=True)
def _default_scope_is_per_test():
    """Each test starts with the default scopes the previous one found. mmengine's DefaultScope
    is global to the process: a scope a test sets (``init_default_scope``, a Runner with
    ``default_scope='mmengine'``) decided which registry a later test in the same xdist worker
    built from, so mmseg's LightHead failed to find CrossEntropyLoss in mmengine's registry
    depending on how the workers were filled."""
    from mmengine.registry import DefaultScope
    saved = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)


@pytest.fixture(scope='module')
def lip_root(tmp_path_factory):
    """Generated LIP-layout data: 8 train / 3 val images of 96x96 (seconds to write)."""
    from vt_mm.datasets import make_demo_lip
    root = tmp_path_factory.mktemp('lip')
    make_demo_lip(str(root), num_train=8, num_val=3, size=96, seed=0)
    return str(root)


@pytest.fixture
def tiny_config():
    """Writes the tiny end-to-end config (the demo's, ResNet-18, narrow tokens) and returns its
    path: ``tiny_config(directory, data_root, name='tiny.py', extra='', deterministic=False)``;
    ``deterministic`` makes runs bit-reproducible (exact-resume tests)."""

    def write(directory, data_root, name='tiny.py', extra='', deterministic=False):
        text = TINY_CONFIG.format(demo=DEMO_CFG, root=str(data_root))
        if deterministic:
            text += 'randomness = dict(seed=0, deterministic=True)\n'
        path = osp.join(str(directory), name)
        with open(path, 'w') as f:
            f.write(text + extra)
        return path

    return write
