"""vt-mm's models by name in the toolboxes' own APIs (vt_mm/engine/model_names.py): mmseg's and
mmdet's inferencers, mmpretrain's get_model / list_models / ImageClassificationInferencer, each
as a user calls it in a fresh process after ``import vt_mm``."""
import os
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT

from vt_mm.engine import model_names


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, '-c', 'import vt_mm\n' + code], capture_output=True,
                          text=True, timeout=600, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _index_names():
    with open(os.path.join(ROOT, 'model-index.yml')) as f:
        imports = yaml.safe_load(f)['Import']
    names = {}
    for metafile in imports:
        with open(os.path.join(ROOT, metafile)) as f:
            for model in yaml.safe_load(f)['Models']:
                tasks = [r['Task'] for r in model.get('Results', [])]
                names[model['Name']] = tasks
    return names


def test_every_model_of_the_index_is_found_by_name_in_any_case():
    names = _index_names()
    assert len(names) >= 40
    for name in names:
        entry = model_names.find_model(name.upper())
        assert entry is not None and entry['Name'] == name, name
        assert os.path.isfile(entry['Config']), entry['Config']
    assert model_names.find_model('resnet50_8xb32_in1k') is None  # mmpretrain's, not ours


@pytest.mark.slow  # a tool or a user's program in a process of its own
def test_mmseg_and_mmdet_inferencers_build_vt_mm_models_by_name():
    out = _run('''
import warnings
import numpy as np
from mmseg.apis import MMSegInferencer
from mmdet.apis import DetInferencer
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    seg = MMSegInferencer('SeaFormer-Tiny_8xb4-160k_ade20k-512x512', device='cpu')
notes = [str(w.message) for w in caught if w.category.__name__ == 'NoPublishedWeights']
print('notes', len(notes), notes[0])
print('seg', type(seg.model.backbone).__name__, type(seg.model.decode_head).__name__)
result = seg(np.zeros((64, 96, 3), np.uint8), return_datasamples=True)
print('mask', tuple(result.pred_sem_seg.data.shape))
det = DetInferencer('retinanet_r50_vtfpn_1x_coco', device='cpu')
print('det', type(det.model.neck).__name__)
for wrong, inferencer in (('retinanet_r50_vtfpn_1x_coco', MMSegInferencer),
                          ('no-such-model', MMSegInferencer)):
    try:
        inferencer(wrong, device='cpu')
    except ValueError as e:
        print('refused', e)
''')
    assert ('notes 1 vt-mm publishes no weights for seaformer-tiny_8xb4-160k_ade20k-512x512: the '
            'model is built from its config and initialised as the config says; pass a '
            'checkpoint (weights=... / pretrained=...) to load one\n') in out
    assert 'seg SeaFormer LightHead' in out and 'mask (1, 64, 96)' in out
    assert 'det VTFPN' in out
    assert ('refused retinanet_r50_vtfpn_1x_coco is an mmdet model of vt-mm, not mmseg: use '
            'DetInferencer') in out
    assert 'refused Cannot find model: no-such-model in mmseg' in out  # mmengine's own message


@pytest.mark.slow  # a tool or a user's program in a process of its own
def test_mmpretrain_get_model_list_models_and_inferencer_by_name():
    classifiers = sorted(n for n, tasks in _index_names().items()
                         if 'Image Classification' in tasks)
    out = _run(f'''
import numpy as np
from mmpretrain import get_model, list_models
from mmpretrain.apis import ImageClassificationInferencer
print('listed', sorted(set(list_models()) & set({classifiers!r})) == {classifiers!r})
print('vt', list_models('vt-resnet*'))
print('own', 'resnet50_8xb32_in1k' in list_models('resnet50*'))
print('model', type(get_model('vt-resnet18_8xb32_in1k').backbone).__name__)
inferencer = ImageClassificationInferencer('pyramid-tnt-ti_8xb128_in1k', device='cpu')
print('label', 0 <= inferencer(np.zeros((64, 64, 3), np.uint8))[0]['pred_label'] < 1000)
''')
    assert 'listed True' in out and 'own True' in out
    assert ("vt ['vt-resnet101_8xb32_in1k', 'vt-resnet18_8xb256-advanced_in1k', "
            "'vt-resnet18_8xb32_in1k', 'vt-resnet34_8xb32_in1k', 'vt-resnet50_8xb32_in1k']"
            in out), out[-2000:]
    assert 'model VTResNet' in out and 'label True' in out


@pytest.mark.slow  # reads every config of the index (25 s)
def test_every_mmpretrain_config_is_marked_as_a_classifier():
    """list_models takes the index's classifiers by their Results task: every config of the
    index that mmpretrain builds must say Image Classification."""
    from mmengine.config import Config
    missing = []
    for name, tasks in _index_names().items():
        entry = model_names.find_model(name)
        if Config.fromfile(entry['Config']).get('default_scope') == 'mmpretrain':
            if 'Image Classification' not in tasks:
                missing.append(name)
    assert missing == []


@pytest.mark.parametrize('again', [1, 2])
def test_registration_is_idempotent(again):
    from mmengine.infer import BaseInferencer
    for _ in range(again):
        model_names.register_model_names()
    patched = BaseInferencer._load_model_from_metafile
    assert patched._vt_mm and not getattr(patched.__wrapped__, '_vt_mm', False)


def _lookup(scope, name):
    """mmengine's inferencer lookup as MMSegInferencer / DetInferencer call it, in process."""
    import types

    from mmengine.infer import BaseInferencer
    return BaseInferencer._load_model_from_metafile(types.SimpleNamespace(scope=scope), name)


def test_the_lookup_builds_a_vt_mm_config_without_weights_and_says_so():
    with pytest.warns(model_names.NoPublishedWeights) as caught:
        cfg, weights = _lookup('mmseg', 'SeaFormer-Tiny_8xb4-160k_ade20k-512x512')
    assert weights is None and cfg.model.backbone.type == 'SeaFormer'
    assert cfg.filename == os.path.join(ROOT, 'configs', 'seaformer',
                                        'seaformer-tiny_8xb4-160k_ade20k-512x512.py')
    notes = [w for w in caught if w.category is model_names.NoPublishedWeights]
    assert [str(w.message) for w in notes] == [model_names.no_weights_message(
        'seaformer-tiny_8xb4-160k_ade20k-512x512')]
    cfg, weights = _lookup('mmdet', 'retinanet_r50_vtfpn_1x_coco')
    assert weights is None and cfg.model.neck.type == 'VTFPN'


def test_the_lookup_keeps_the_toolboxes_own_names_and_messages():
    cfg, weights = _lookup('mmseg', 'fcn_r50-d8_4xb2-40k_cityscapes-512x1024')  # mmseg's own
    assert weights.startswith('https://download.openmmlab.com/mmsegmentation/')
    assert cfg.model.decode_head.type == 'FCNHead'
    with pytest.raises(ValueError, match=r'^Cannot find model: no-such-model in mmseg$'):
        _lookup('mmseg', 'no-such-model')
    with pytest.raises(ValueError, match=r'^retinanet_r50_vtfpn_1x_coco is an mmdet model of '
                       r'vt-mm, not mmseg: use DetInferencer$'):
        _lookup('mmseg', 'retinanet_r50_vtfpn_1x_coco')
    with pytest.raises(ValueError, match=r'^seaformer-tiny_8xb4-160k_ade20k-512x512 is an mmseg '
                       r'model of vt-mm, not mmdet: use MMSegInferencer$'):
        _lookup('mmdet', 'seaformer-tiny_8xb4-160k_ade20k-512x512')


def test_mmpretrains_hub_holds_vt_mm_classifiers_only_beside_its_own():
    from mmpretrain.apis.model import ModelHub
    ModelHub._register_mmpretrain_models()
    hub = ModelHub._models_dict
    entry = hub['vt-resnet18_8xb32_in1k']
    assert entry.config == os.path.join(ROOT, 'configs', 'vt_resnet', 'vt-resnet18_8xb32_in1k.py')
    assert 'seaformer-tiny_8xb128_in1k' in hub and 'resnet50_8xb32_in1k' in hub
    assert 'seaformer-tiny_8xb4-160k_ade20k-512x512' not in hub  # a segmentor
    assert 'retinanet_r50_vtfpn_1x_coco' not in hub
    model_names.register_model_names()  # again: the hub is not registered twice
    ModelHub._register_mmpretrain_models()
    assert ModelHub._models_dict is hub and hub['vt-resnet18_8xb32_in1k'] is entry


def test_no_weights_message_names_the_model_and_what_to_do():
    assert model_names.no_weights_message('x_1') == (
        'vt-mm publishes no weights for x_1: the model is built from its config and initialised '
        'as the config says; pass a checkpoint (weights=... / pretrained=...) to load one')
    assert model_names.model_index_root() == ROOT  # a clone: the repository's model-index


def test_registration_wraps_mmengines_lookup_once(monkeypatch):
    """Registration as ``import vt_mm`` did it, run again in this process from mmengine's own
    lookup (import-time code is otherwise out of mutation testing's reach)."""
    import types

    from mmengine.infer import BaseInferencer
    own = BaseInferencer._load_model_from_metafile.__wrapped__
    monkeypatch.setattr(BaseInferencer, '_load_model_from_metafile', own)
    model_names._register_with_mmengine()
    wrapper = BaseInferencer._load_model_from_metafile
    assert wrapper is not own and wrapper._vt_mm is True and wrapper.__wrapped__ is own
    model_names._register_with_mmengine()  # again: the same wrapper
    assert BaseInferencer._load_model_from_metafile is wrapper
    with pytest.warns(model_names.NoPublishedWeights):
        cfg, weights = wrapper(types.SimpleNamespace(scope='mmdet'), 'retinanet_r50_vtfpn_1x_coco')
    assert weights is None and cfg.model.neck.type == 'VTFPN'


def test_a_model_of_a_toolbox_without_an_inferencer_names_the_toolbox(tmp_path, monkeypatch):
    import types
    config = tmp_path / 'other.py'
    config.write_text("default_scope = 'mmfoo'\nmodel = dict(type='X')\n")
    monkeypatch.setattr(model_names, 'find_model',
                        lambda name: {'Name': 'other_model', 'Config': str(config)})

    def not_mine(inferencer, model):
        raise ValueError('not in the toolbox')

    with pytest.raises(ValueError, match='^other_model is an mmfoo model of vt-mm, not mmseg: '
                                         'use mmfoo$'):
        model_names.lookup(not_mine, types.SimpleNamespace(scope='mmseg'), 'other_model')


def test_registration_adds_vt_mm_classifiers_to_a_fresh_hub(monkeypatch):
    """mmpretrain's hub from scratch: vt-mm's registration wraps its lazy registration once;
    the first lookup registers mmpretrain's models and then vt-mm's classifiers, by lower-case
    name, configs as absolute paths; a name mmpretrain has keeps mmpretrain's entry."""
    from mmpretrain.apis.model import ModelHub
    own = vars(ModelHub)['_register_mmpretrain_models'].__func__.__wrapped__
    monkeypatch.setattr(ModelHub, '_register_mmpretrain_models', classmethod(own))
    monkeypatch.setattr(ModelHub, '_models_dict', {})
    monkeypatch.setattr(ModelHub, '_ModelHub__mmpretrain_registered', False)
    monkeypatch.delattr(ModelHub, '_vt_mm_registered', raising=False)  # a hub never seen
    monkeypatch.chdir(ROOT + '/tests')  # the index is found from vt-mm, not from the cwd
    model_names._register_with_mmpretrain()
    wrapper = vars(ModelHub)['_register_mmpretrain_models'].__func__
    assert wrapper._vt_mm is True and wrapper.__wrapped__ is own
    model_names._register_with_mmpretrain()  # again: the same wrapper
    assert vars(ModelHub)['_register_mmpretrain_models'].__func__ is wrapper
    taken = object()
    ModelHub._models_dict['seaformer-tiny_8xb128_in1k'] = taken  # a name already there
    added = []
    add = model_names._add_classifiers
    monkeypatch.setattr(model_names, '_add_classifiers', lambda hub: (added.append(hub),
                                                                       add(hub)))
    ModelHub._register_mmpretrain_models()
    hub = ModelHub._models_dict
    assert 'resnet50_8xb32_in1k' in hub  # mmpretrain's own
    assert hub['vt-resnet18_8xb32_in1k'].config == os.path.join(
        ROOT, 'configs', 'vt_resnet', 'vt-resnet18_8xb32_in1k.py')
    assert hub['seaformer-tiny_8xb128_in1k'] is taken
    ours = {name for name, tasks in _index_names().items() if 'Image Classification' in tasks}
    assert {name.lower() for name in ours} <= set(hub)
    assert 'retinanet_r50_vtfpn_1x_coco' not in hub  # a detector
    before = dict(hub)
    ModelHub._register_mmpretrain_models()  # registered once
    assert hub == before and added == [ModelHub]
