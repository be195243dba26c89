"""The ImageNet stand-in (vt_mm/datasets/demo_classes.py), the backbone pretraining tool, and
its checkpoint loading into the parity rows' mmseg and mmdet models."""
import ast
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT, load_script

from vt_mm.datasets import demo_classes
from vt_mm.datasets.demo_classes import CLASSES, SHAPES, TEXTURES, make_class_sample


def test_classes_are_every_shape_with_every_texture():
    assert len(CLASSES) == len(SHAPES) * len(TEXTURES) == 100
    assert len(set(CLASSES)) == 100
    assert CLASSES[0] == f'{SHAPES[0]}-{TEXTURES[0]}'
    assert CLASSES[13] == f'{SHAPES[1]}-{TEXTURES[3]}'  # label // 10 = shape, label % 10 = texture


def test_the_generator_shares_no_code_with_the_parity_tasks():
    """Pretraining on the downstream tasks' generators would leak them into the backbone."""
    tree = ast.parse(open(demo_classes.__file__).read())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}
    assert not {m for m in imported if m and ('demo_lip' in m or 'demo_cue' in m or
                                              'demo_shapes' in m)}, imported


def test_each_shape_has_its_own_outline_and_each_texture_its_own_pattern():
    """Same random stream, different class: the outline (shape) or the pattern (texture)
    changes; the solid texture is flat, every other one has two colours' worth of contrast."""
    size = 64
    masks = {}
    for shape in SHAPES:
        masks[shape], _ = demo_classes._shape_mask(shape, size, np.random.default_rng(3))
        assert 0.02 < masks[shape].mean() < 0.6, shape
    for i, a in enumerate(SHAPES):
        for b in SHAPES[i + 1:]:
            union = (masks[a] | masks[b]).sum()
            assert (masks[a] & masks[b]).sum() / union < 0.93, (a, b)
    patterns = {t: demo_classes._texture(t, size, (32, 32), 20, np.random.default_rng(5))
                for t in TEXTURES}
    assert patterns['solid'].std() == 0
    for t in TEXTURES[1:]:
        assert patterns[t].std() > 0.15, t
    flat = {t: p.ravel() for t, p in patterns.items() if t != 'solid'}
    names = list(flat)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert abs(np.corrcoef(flat[a], flat[b])[0, 1]) < 0.9, (a, b)


def test_colour_does_not_give_the_class_away():
    """Colours are drawn per image: the mean colour of a class's images is the same for every
    class (within sampling noise), so only outline and pattern tell them apart."""
    rng = np.random.default_rng(0)
    means = np.array([[make_class_sample(label, 32, rng).mean((0, 1)) for _ in range(24)]
                      for label in (0, 37, 99)]).mean(1)
    assert np.abs(means - means.mean(0)).max() < 25


def test_dataset_is_deterministic_and_in_mmpretrains_layout(tmp_path):
    from mmpretrain.datasets import CustomDataset
    a = demo_classes.make_demo_classes(str(tmp_path / 'a'), 2, 1, size=24, seed=0)
    b = demo_classes.make_demo_classes(str(tmp_path / 'b'), 2, 1, size=24, seed=0)
    for split in ('train', 'val'):
        lines = open(osp.join(a, 'meta', f'{split}.txt')).read().split()
        assert lines == open(osp.join(b, 'meta', f'{split}.txt')).read().split()
        rel = lines[-2]
        assert open(osp.join(a, split, rel), 'rb').read() == open(osp.join(b, split, rel),
                                                                  'rb').read()
    # the held-out split is another stream, not a copy of the first training images
    assert open(osp.join(a, 'train', CLASSES[0], '00000.png'), 'rb').read() != open(
        osp.join(a, 'val', CLASSES[0], '00000.png'), 'rb').read()
    ds = CustomDataset(data_root=a, ann_file='meta/val.txt', data_prefix='val',
                       classes=osp.join(a, 'meta', 'classes.txt'))
    assert len(ds) == 100 and ds.CLASSES == CLASSES
    assert [ds.get_gt_labels()[i] for i in (0, 57)] == [0, 57]
    with pytest.raises(ValueError, match='train_per_class=0'):
        demo_classes.make_demo_classes(str(tmp_path / 'c'), 0, 1)


@pytest.mark.slow
def test_pretrained_backbone_loads_into_the_parity_rows(tmp_path):
    """pretrain_backbone.py trains through tools/train.py and writes the backbone alone; the
    parity rows' mmseg and mmdet models start from exactly those weights, and a backbone that
    does not fit (mmdet's plain stem) is refused with the keys named."""
    out = tmp_path / 'pretrain'
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'benchmarks', 'pretrain_backbone.py'), '--iters', '3',
         '--batch', '8', '--size', '32', '--train-per-class', '1', '--val-per-class', '1',
         '--threads', '1', '--out', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'held-out top-1' in proc.stdout
    ckpt = str(out / 'resnet18_v1c_backbone.pth')
    saved = torch.load(ckpt, weights_only=True)
    assert saved['meta']['classes'] == 100 and 0 <= saved['meta']['top1'] <= 100
    state = saved['state_dict']
    assert state and all(k.startswith('backbone.') for k in state)
    assert 'backbone.stem.0.weight' in state and 'backbone.layer4.1.conv2.weight' in state

    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    tp = load_script('benchmarks/training_parity.py')
    roots = tp.make_data(str(tmp_path / 'parity'))
    for row, scope in (('lip-sgd', 'mmseg'), ('retinanet', 'mmdet')):
        path = tmp_path / f'{row}.py'
        path.write_text(tp.config_text(row, 'VT-FPN', roots, 0.1, pretrained_backbone=ckpt))
        tp.check_backbone_checkpoint(str(path), ckpt)
        cfg = Config.fromfile(str(path))
        init_default_scope(scope)
        import importlib
        model = importlib.import_module(f'{scope}.registry').MODELS.build(cfg.model)
        model.init_weights()
        own = model.backbone.state_dict()
        for key, value in state.items():
            torch.testing.assert_close(own[key[len('backbone.'):]], value, rtol=0, atol=0)
        assert model.neck.__class__.__name__ == 'VTFPN'
    plain = tmp_path / 'plain.py'
    plain.write_text(tp.config_text('retinanet', 'FPN', roots, 0.1))
    with pytest.raises(ValueError, match=r'does not fit.*missing.*bn1.*unexpected.*stem\.0'):
        tp.check_backbone_checkpoint(str(plain), ckpt)
