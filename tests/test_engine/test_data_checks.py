"""Data checked before it costs a run (vt_mm/engine/data_checks.py): each bad input names the file
(or the id list), what is wrong and the setting that fixes it, whatever the batch size."""
import os.path as osp
import re
import shutil

import numpy as np
import pytest
from helpers import ROOT
from helpers.tools import iters, run_python, tool_env
from PIL import Image

LABELS = osp.join('TrainVal_parsing_annotations', 'train_segmentations')


_env = tool_env
_iters = iters


def _run(args, cwd=ROOT, expect_ok=False, timeout=600):
    """As ``run_python``, but not asserting success unless asked (the checks here fail)."""
    return run_python(args, cwd=cwd, expect_ok=expect_ok, timeout=timeout)


@pytest.fixture
def lip_copy(lip_root, tmp_path):
    root = tmp_path / 'lip'
    shutil.copytree(lip_root, root)
    return root


def _labels(root):
    return sorted((root / LABELS).glob('*.png'))


def _smaller_label(path):
    label = np.array(Image.open(path))
    Image.fromarray(label[:48, :48]).save(path)


def _label_value(path, value):
    label = np.array(Image.open(path))
    label[10:20, 10:20] = value
    Image.fromarray(label).save(path)


def _train_args(cfg, tmp_path, batch_size):
    return ['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
            'train_cfg.max_iters=2', f'train_dataloader.batch_size={batch_size}']


@pytest.mark.slow
@pytest.mark.parametrize('batch_size', [1, 2])
def test_label_smaller_than_its_image_is_refused_naming_the_file(lip_copy, tmp_path, tiny_config,
                                                                  batch_size):
    """Before: batch 1 trained silently on a misaligned label; batch 2 failed in torch.stack."""
    bad = _labels(lip_copy)[3]
    _smaller_label(bad)
    code, out = _run(_train_args(tiny_config(tmp_path, lip_copy), tmp_path, batch_size))
    assert code != 0
    assert f'{bad}: the label map is 48x48 but its image' in out, out[-3000:]
    assert 'data_prefix.seg_map_path' in out and 'stack expects' not in out


@pytest.mark.slow
def test_label_value_outside_the_classes_is_refused_naming_the_file(lip_copy, tmp_path,
                                                                     tiny_config):
    """Before: 'IndexError: Target 50 is out of bounds' from cross-entropy."""
    bad = _labels(lip_copy)[5]
    _label_value(bad, 50)
    code, out = _run(_train_args(tiny_config(tmp_path, lip_copy), tmp_path, 1))
    assert code != 0
    assert f'{bad}: label values 50 are outside [0, 20) and are not the ignore index 255' in out
    for setting in ('num_classes', 'reduce_zero_label', 'ignore_index'):
        assert setting in out
    assert 'out of bounds' not in out


@pytest.mark.slow
def test_empty_train_split_names_the_id_list(lip_copy, tmp_path, tiny_config):
    """Before: 'ValueError: need at least one array to concatenate' from mmengine."""
    (lip_copy / 'TrainVal_images' / 'train_id.txt').write_text('')
    code, out = _run(_train_args(tiny_config(tmp_path, lip_copy), tmp_path, 2))
    assert code != 0
    assert "train_dataloader: the dataset (LIPDataset" in out
    assert "its id list 'TrainVal_images/train_id.txt' is empty" in out, out[-3000:]
    assert 'data_root / ann_file / data_prefix' in out
    assert 'need at least one array' not in out


@pytest.mark.slow
def test_unreadable_image_is_refused_naming_the_file(lip_copy, tmp_path, tiny_config):
    images = sorted((lip_copy / 'TrainVal_images' / 'train_images').glob('*.jpg'))
    images[2].write_bytes(b'not a jpeg')
    code, out = _run(_train_args(tiny_config(tmp_path, lip_copy), tmp_path, 2))
    assert code != 0
    assert str(images[2]) in out and 'cannot be read' in out and 'data_root' in out, out[-3000:]


@pytest.mark.slow
def test_check_data_tool_lists_every_bad_sample(lip_copy, tmp_path, tiny_config):
    labels = _labels(lip_copy)
    _smaller_label(labels[1])
    _label_value(labels[6], 77)
    code, out = _run(['tools/analysis_tools/check_data.py', tiny_config(tmp_path, lip_copy)])
    assert code == 1
    assert f'{labels[1]}: the label map is 48x48' in out
    assert f'{labels[6]}: label values 77 are outside' in out
    assert '[check_data] 11 samples checked, 2 problems' in out  # 8 train + 3 val
    assert '8/8' in out and '3/3' in out  # mmengine's progress bar per split


@pytest.fixture
def lip_dataset(lip_copy, tmp_path, tiny_config):
    from mmengine.config import Config

    from vt_mm.engine import data_checks
    cfg = Config.fromfile(tiny_config(tmp_path, lip_copy))
    return cfg, data_checks.build_dataset(cfg, cfg.train_dataloader.dataset)


def test_training_time_guard_checks_every_sample(lip_copy, lip_dataset):
    """The preflight samples 16 per split; during training every sample goes through the same
    check (in the pipeline, right after LoadAnnotations), so a bad label beyond the preflight's
    sample still fails naming its file, at any batch size."""
    from vt_mm.engine import data_checks
    cfg, dataset = lip_dataset
    data_checks.guard_samples(dataset, ignore_index=255)
    names = [type(t).__name__ for t in dataset.pipeline.transforms]
    assert names[names.index('LoadAnnotations') + 1] == 'SegLabelCheck'
    dataset[0]  # a good sample passes
    bad = _labels(lip_copy)[0]
    _label_value(bad, 21)
    index = next(i for i in range(len(dataset))
                 if dataset.get_data_info(i)['seg_map_path'] == str(bad))
    with pytest.raises(data_checks.DataSampleError,
                       match=rf'LIPDataset sample {index}: .*label values 21 are outside'):
        dataset[index]
    data_checks.guard_samples(dataset, ignore_index=255)  # idempotent: one check, one wrapper
    assert [type(t).__name__ for t in dataset.pipeline.transforms].count('SegLabelCheck') == 1


def test_the_ignore_index_is_allowed_and_configurable(lip_copy, lip_dataset):
    from vt_mm.engine import data_checks
    cfg, dataset = lip_dataset
    steps = data_checks._loading_steps(dataset)
    _label_value(_labels(lip_copy)[0], 255)  # the ignore index: fine
    index = next(i for i in range(len(dataset))
                 if dataset.get_data_info(i)['seg_map_path'] == str(_labels(lip_copy)[0]))
    assert data_checks.check_sample(dataset, index, steps,
                                    data_checks.SegLabelCheck(20, 255)) is None
    # another ignore index makes 255 a bad value
    problem = data_checks.check_sample(dataset, index, steps, data_checks.SegLabelCheck(20, 250))
    assert 'label values 255 are outside [0, 20)' in problem
    assert data_checks.label_settings(cfg) == dict(ignore_index=255)


def _results(label, image_shape=None):
    label = np.asarray(label)
    return dict(gt_seg_map=label, seg_map_path='lbl.png', img_path='img.jpg',
                ori_shape=image_shape or label.shape[:2])


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.int32, np.int64])
def test_label_values_at_the_class_boundary(dtype):
    """num_classes - 1 is the last valid value, num_classes the first invalid; -1 is invalid
    unless it is the ignore index; the ignore index is valid whatever its value."""
    from vt_mm.engine.data_checks import SegLabelCheck
    check = SegLabelCheck(20, 255)
    assert check.problem(_results(np.full((4, 5), 19, dtype))) is None
    assert check.problem(_results(np.full((4, 5), 0, dtype))) is None
    assert check.problem(_results(np.full((4, 5), 255, dtype))) is None
    label = np.zeros((4, 5), dtype)
    label[1, 2] = 20
    assert check.problem(_results(label)) == (
        'lbl.png: label values 20 are outside [0, 20) and are not the ignore index 255 '
        '(1 pixels). Fix the label map, or set num_classes (model.decode_head.num_classes and the '
        'dataset classes) to cover them, reduce_zero_label=True on the dataset if 0 is "other" '
        'and the classes start at 1, or model.decode_head.ignore_index if a value marks pixels '
        'to ignore')
    if np.issubdtype(dtype, np.signedinteger):
        label[1, 2] = -1
        assert 'label values -1 are outside' in check.problem(_results(label))
        assert SegLabelCheck(20, -1).problem(_results(label)) is None
    label[1, 2] = 254
    assert 'label values 254 are outside' in check.problem(_results(label))
    assert SegLabelCheck(255, 255).problem(_results(label)) is None


def test_label_listing_shows_eight_values_then_an_ellipsis():
    from vt_mm.engine.data_checks import SegLabelCheck
    eight = np.arange(20, 28, dtype=np.uint8).reshape(2, 4)
    problem = SegLabelCheck(20).problem(_results(eight))
    assert 'label values 20, 21, 22, 23, 24, 25, 26, 27 are outside' in problem
    assert '(8 pixels)' in problem
    nine = np.arange(20, 29, dtype=np.uint8).reshape(3, 3)
    assert 'label values 20, 21, 22, 23, 24, 25, 26, 27 ... are outside' in \
        SegLabelCheck(20).problem(_results(nine))


@pytest.mark.parametrize('label_shape,image_shape', [((4, 5), (4, 6)), ((4, 5), (5, 5)),
                                                     ((5, 4), (4, 5))])
def test_label_size_must_equal_the_image_size_in_each_dimension(label_shape, image_shape):
    from vt_mm.engine.data_checks import SegLabelCheck
    problem = SegLabelCheck(20).problem(_results(np.zeros(label_shape, np.uint8), image_shape))
    assert problem.startswith(
        f'lbl.png: the label map is {label_shape[0]}x{label_shape[1]} but its image img.jpg is '
        f'{image_shape[0]}x{image_shape[1]}; every label must have its image\'s size.')
    # without ori_shape the image array's size counts
    results = _results(np.zeros(label_shape, np.uint8))
    results.pop('ori_shape')
    results['img'] = np.zeros(image_shape + (3, ), np.uint8)
    assert 'but its image img.jpg is' in SegLabelCheck(20).problem(results)


def test_label_check_as_a_pipeline_step():
    from vt_mm.engine.data_checks import DataSampleError, SegLabelCheck
    check = SegLabelCheck(3, ignore_index=7)
    good = _results(np.array([[0, 2], [7, 1]], np.uint8))
    assert check(good) is good
    assert check(dict(img=np.zeros((2, 2, 3)))) is not None  # no label: nothing to check
    with pytest.raises(DataSampleError, match='label values 3 are outside'):
        check(_results(np.array([[3]], np.uint8)))
    assert repr(check) == 'SegLabelCheck(num_classes=3, ignore_index=7)'
    assert SegLabelCheck(3).ignore_index == 255


def test_ignore_index_comes_from_the_last_decode_head():
    from mmengine.config import Config

    from vt_mm.engine.data_checks import label_settings
    assert label_settings(Config(dict())) == dict(ignore_index=255)
    assert label_settings(Config(dict(model=dict(decode_head=dict(type='X'))))) == dict(
        ignore_index=255)
    assert label_settings(Config(dict(model=dict(decode_head=dict(ignore_index=7))))) == dict(
        ignore_index=7)
    cascade = [dict(ignore_index=3), dict(ignore_index=9)]
    assert label_settings(Config(dict(model=dict(decode_head=cascade)))) == dict(ignore_index=9)
    assert label_settings(Config(dict(model=dict(decode_head=[])))) == dict(ignore_index=255)


def test_num_classes_of_every_head_is_checked():
    from types import SimpleNamespace

    from mmengine.config import Config

    from vt_mm.engine.data_checks import check_num_classes
    model = dict(decode_head=dict(num_classes=20), auxiliary_head=[dict(num_classes=3),
                                                                   dict(num_classes=20)],
                 roi_head=dict(bbox_head=dict(num_classes=20), mask_head=dict(num_classes=20)),
                 bbox_head=dict(num_classes=20), head=dict(num_classes=20))
    dataset = SimpleNamespace(metainfo=dict(classes=tuple(f'c{i}' for i in range(20))))
    with pytest.raises(ValueError, match=r'^model\.auxiliary_head\.0\.num_classes=3 but'):
        check_num_classes(Config(dict(model=model)), dataset)  # every head of a list counts
    model['auxiliary_head'][0]['num_classes'] = 20
    check_num_classes(Config(dict(model=model)), dataset)
    for path in ('decode_head', 'bbox_head', 'head'):
        bad = Config(dict(model=dict(model, **{path: dict(num_classes=21)})))
        with pytest.raises(ValueError, match=rf'^model\.{path}\.num_classes=21 but the training '
                           r"dataset \(SimpleNamespace\) has 20 classes \('c0', .*'c5'\)\.\.\.; "
                           rf'set model\.{path}\.num_classes=20 or the dataset metainfo$'):
            check_num_classes(bad, dataset)
    bad = Config(dict(model=dict(roi_head=dict(mask_head=dict(num_classes=19)))))
    with pytest.raises(ValueError, match=r'model\.roi_head\.mask_head\.num_classes=19'):
        check_num_classes(bad, dataset)
    # six classes are listed whole; panoptic datasets (thing_classes) are not compared
    six = SimpleNamespace(metainfo=dict(classes=('a', 'b', 'c', 'd', 'e', 'f')))
    with pytest.raises(ValueError, match=r"has 6 classes \('a', 'b', 'c', 'd', 'e', 'f'\); set"):
        check_num_classes(Config(dict(model=dict(head=dict(num_classes=5)))), six)
    panoptic = SimpleNamespace(metainfo=dict(classes=('a', ), thing_classes=('a', )))
    check_num_classes(Config(dict(model=dict(head=dict(num_classes=5)))), panoptic)
    check_num_classes(Config(dict(model=dict(head=dict(num_classes=5)))), SimpleNamespace())


def test_split_sample_is_evenly_spaced_and_all_at_the_boundary(lip_copy, tmp_path, tiny_config,
                                                               monkeypatch):
    """max_samples >= the split's size checks every sample; one fewer takes that many, first
    and last included."""
    from mmengine.config import Config

    from vt_mm.engine import data_checks
    cfg = Config.fromfile(tiny_config(tmp_path, lip_copy))
    seen = []
    monkeypatch.setattr(data_checks, 'check_sample',
                        lambda dataset, idx, steps, check: seen.append(idx))
    for max_samples, expected in ((8, [0, 1, 2, 3, 4, 5, 6, 7]), (None, list(range(8))),
                                  (9, list(range(8))), (7, [0, 1, 2, 4, 5, 6, 7]),
                                  (2, [0, 7]), (3, [0, 4, 7])):
        seen.clear()
        problems, checked = data_checks.check_splits(cfg, ['train_dataloader'], max_samples)
        assert (seen, checked, problems) == (expected, len(expected), []), max_samples
    seen.clear()
    _, checked = data_checks.check_splits(cfg, ['train_dataloader', 'val_dataloader'], 16)
    assert checked == 11 and seen == list(range(8)) + list(range(3))


def test_preflight_lists_every_problem_with_its_scope(lip_copy, tmp_path, tiny_config):
    from mmengine.config import Config

    from vt_mm.engine import data_checks
    labels = _labels(lip_copy)
    _label_value(labels[1], 30)
    _label_value(labels[6], 31)
    cfg = Config.fromfile(tiny_config(tmp_path, lip_copy))
    with pytest.raises(data_checks.DataCheckError) as info:
        data_checks.preflight_data(cfg, ['train_dataloader'], None)
    message = str(info.value)
    assert message.startswith('2 problems in the data (all samples of train_dataloader '
                              'checked):\n  train_dataloader: ')
    lines = message.split('\n')
    assert len(lines) == 4 and all(line.startswith('  train_dataloader: ') for line in lines[1:3])
    assert [str(labels[1]) in lines[1], str(labels[6]) in lines[2]] == [True, True]
    assert message.endswith('\n(tools/analysis_tools/check_data.py CONFIG lists every bad sample '
                            'of a split)')
    with pytest.raises(data_checks.DataCheckError, match=r'^2 problems in the data \(8 sampled '
                       r'samples of train_dataloader checked\)'):
        data_checks.preflight_data(cfg, ['train_dataloader'], 16)
    data_checks.preflight_data(cfg, ['val_dataloader'], 16)  # the val split is clean


def test_missing_root_is_checked_for_the_named_splits_only(tmp_path, tiny_config):
    from mmengine.config import Config

    from vt_mm.engine import data_checks
    cfg = Config.fromfile(tiny_config(tmp_path, tmp_path / 'nowhere'))
    data_checks.check_data(cfg, ())
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        with pytest.raises(FileNotFoundError, match=rf"^{split}: data_root '.*nowhere' does not "
                           r'exist \(dataset LIPDataset\)\. .*make_demo_lip\.py --out '
                           r'data/LIP_demo'):
            data_checks.check_data(cfg, (split, ))
    other = Config(dict(train_dataloader=dict(dataset=dict(
        type='RepeatDataset', dataset=dict(type='CocoDataset', data_root=str(tmp_path / 'c'))))))
    with pytest.raises(FileNotFoundError,
                       match=r'\(dataset CocoDataset\).*see docs/en/user_guides/data\.md'):
        data_checks.check_data(other)
    concat = Config(dict(val_dataloader=dict(dataset=dict(type='ConcatDataset', datasets=[
        dict(type='A', data_root=str(tmp_path)), dict(type='B', data_root=str(tmp_path / 'x'))]))))
    with pytest.raises(FileNotFoundError, match=r"val_dataloader: data_root '.*x' .*dataset B"):
        data_checks.check_data(concat)


def test_guard_checks_after_the_last_label_loader_of_every_wrapped_dataset(lip_dataset):
    from mmengine.dataset import ConcatDataset

    from vt_mm.engine import data_checks
    cfg, dataset = lip_dataset
    transforms = dataset.pipeline.transforms
    loader = next(t for t in transforms if type(t).__name__ == 'LoadAnnotations')
    transforms.insert(0, loader)  # a second LoadAnnotations first: the check goes after the last
    wrapper = ConcatDataset([dataset], lazy_init=True)
    data_checks.guard_samples(wrapper, ignore_index=7)
    names = [type(t).__name__ for t in transforms]
    last = max(i for i, n in enumerate(names) if n == 'LoadAnnotations')
    assert names[last + 1] == 'SegLabelCheck' and names.count('SegLabelCheck') == 1
    assert transforms[last + 1].ignore_index == 7 and transforms[last + 1].num_classes == 20
    assert dataset._vtmm_guarded is True


def test_loading_steps_end_at_the_last_loader():
    from types import SimpleNamespace

    from vt_mm.engine.data_checks import _loading_steps

    def step(name):
        return type(name, (), {})()

    steps = [step('LoadImageFromFile'), step('Resize'), step('LoadAnnotations'),
             step('RandomFlip')]
    dataset = SimpleNamespace(pipeline=SimpleNamespace(transforms=steps))
    assert _loading_steps(dataset) == steps[:3]
    dataset.pipeline.transforms = [step('Resize'), step('RandomFlip')]
    assert _loading_steps(dataset) == []
    assert _loading_steps(SimpleNamespace()) == []


def test_label_file_values_are_checked_before_the_8_bit_cast(tmp_path):
    from vt_mm.engine.data_checks import label_file_problem
    ok16 = np.zeros((6, 5), np.uint16)
    ok16[1, 1] = 255
    Image.fromarray(ok16).save(tmp_path / 'ok16.png')
    bad16 = ok16.copy()
    bad16[2, 2] = 261
    Image.fromarray(bad16).save(tmp_path / 'bad16.png')
    bad32 = np.zeros((6, 5), np.int32)
    bad32[0, 0] = 70000
    Image.fromarray(bad32).save(tmp_path / 'bad32.tif')
    negative = np.zeros((6, 5), np.int32)
    negative[0, 0] = -1
    Image.fromarray(negative).save(tmp_path / 'negative.tif')
    Image.fromarray(np.full((6, 5), 7, np.uint8)).save(tmp_path / 'eight.png')
    assert label_file_problem(str(tmp_path / 'eight.png')) is None
    assert label_file_problem(str(tmp_path / 'ok16.png')) is None  # 16-bit, values fit
    assert label_file_problem(str(tmp_path / 'bad16.png')) == (
        f'{tmp_path / "bad16.png"}: a 16-bit label holding values from 0 to 261; mmseg reads '
        'label maps as 8-bit (LoadAnnotations casts them), so a value above 255 would train as '
        'another class (261 as 5). Store class ids in [0, 255] (num_classes up to 255 plus the '
        'ignore index), or remap the labels')
    assert 'a 32-bit label holding values from 0 to 70000' in label_file_problem(
        str(tmp_path / 'bad32.tif'))
    assert 'values from -1 to 0' in label_file_problem(str(tmp_path / 'negative.tif'))
    assert label_file_problem(str(tmp_path / 'missing.png')) is None  # reported where read
    assert label_file_problem('s3://bucket/label.png') is None


def test_sixteen_bit_label_above_255_fails_the_sample_not_its_class(lip_copy, lip_dataset):
    """mmseg's LoadAnnotations would read 261 as 5 (a valid class): the guard names the file."""
    from vt_mm.engine import data_checks
    cfg, dataset = lip_dataset
    label_path = _labels(lip_copy)[0]
    label = np.array(Image.open(label_path)).astype(np.uint16)
    label[5:8, 5:8] = 261
    Image.fromarray(label).save(label_path)
    data_checks.guard_samples(dataset, 255)
    index = next(i for i in range(len(dataset))
                 if dataset.get_data_info(i)['seg_map_path'] == str(label_path))
    with pytest.raises(data_checks.DataSampleError, match=r'a 16-bit label holding values from 0 '
                       r'to 261'):
        dataset[index]


def test_colour_label_is_named_at_start_up(lip_copy, tmp_path, tiny_config):
    """An RGB label with R=G=B passed the size and value checks and failed in the loss."""
    from mmengine.config import Config

    from vt_mm.engine import data_checks
    bad = _labels(lip_copy)[2]
    grey = np.array(Image.open(bad))
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(bad)
    cfg = Config.fromfile(tiny_config(tmp_path, lip_copy))
    problems, _ = data_checks.check_splits(cfg, ['train_dataloader'], None)
    assert problems == [f'train_dataloader: {bad}: the label map has 3 channels (shape (96, 96, '
                        '3)); labels must be one channel of class ids (a grey or palette PNG), '
                        'not a colour image. Convert the colours to class ids (one value per '
                        'class)']


@pytest.mark.slow
def test_bad_val_sample_beyond_the_start_up_sample_fails_naming_its_file(tmp_path, tiny_config):
    """The start-up check reads 16 evenly spaced samples of each split; during training every
    validation sample goes through the same check (it used to change the val mIoU silently,
    and a corrupt val image failed with mmcv's bare AssertionError)."""
    from vt_mm.datasets import make_demo_lip
    root = tmp_path / 'lip'
    make_demo_lip(str(root), num_train=4, num_val=20, size=64, seed=0)
    sampled = sorted({int(round(i)) for i in np.linspace(0, 19, 16)})
    unsampled = [i for i in range(20) if i not in sampled]
    assert unsampled == [2, 7, 12, 17]
    val_labels = sorted((root / 'TrainVal_parsing_annotations' / 'val_segmentations').glob('*'))
    _label_value(val_labels[7], 50)
    val_images = sorted((root / 'TrainVal_images' / 'val_images').glob('*.jpg'))
    val_images[12].write_bytes(b'not a jpeg')
    cfg = tiny_config(tmp_path, root)
    code, out = _run(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                      'train_cfg.max_iters=2', 'train_cfg.val_interval=2'])
    assert code != 0
    assert 'DataSampleError' in out and 'LIPDataset sample' in out, out[-3000:]
    assert str(val_labels[7]) in out or str(val_images[12]) in out, out[-3000:]
    assert not re.search(r'mIoU: \d', out)  # no validation score from the bad split


def test_missing_root_hints_at_the_demo_data_for_lip_and_the_readme_otherwise():
    from vt_mm.engine.data_checks import _check_root
    for ds in (dict(type='LIPDataset', data_root='/nowhere/x'),
               dict(type='BaseSegDataset', data_root='/nowhere/LIP')):
        with pytest.raises(FileNotFoundError) as info:
            _check_root('train_dataloader', ds)
        assert str(info.value) == (
            f"train_dataloader: data_root {ds['data_root']!r} does not exist (dataset "
            f"{ds['type']}). Put the dataset there, point --cfg-options "
            'train_dataloader.dataset.data_root=... at it, or for synthetic LIP-layout data, run '
            '`python tools/dataset_converters/make_demo_lip.py --out data/LIP_demo` and point '
            'data_root there (or run `make demo`).')
    with pytest.raises(FileNotFoundError) as info:
        _check_root('val_dataloader', dict(data_root='/nowhere/coco'))
    assert str(info.value).endswith("(dataset None). Put the dataset there, point --cfg-options "
                                    'val_dataloader.dataset.data_root=... at it, or see '
                                    'docs/en/user_guides/data.md.')
    _check_root('x', dict(type='LIPDataset'))  # no data_root: nothing to check
    _check_root('x', dict(data_root=''))


def test_dataset_configs_inside_wrappers_and_loaders():
    from mmengine.config import Config

    from vt_mm.engine.data_checks import _dataset_roots, _leaf_dataset_cfgs
    a, b = dict(type='A', data_root='a'), dict(type='B', data_root='b')
    assert list(_leaf_dataset_cfgs(dict(type='Repeat', dataset=dict(type='Class', dataset=a)))) \
        == [a]
    assert list(_leaf_dataset_cfgs(dict(type='Concat', datasets=[a, 'junk', b]))) == [a, b]
    assert list(_leaf_dataset_cfgs(None)) == [] and list(_leaf_dataset_cfgs([a])) == []
    cfg = Config(dict(train_dataloader=dict(dataset=a), val_dataloader=None,
                      test_dataloader=dict(batch_size=1)))
    assert [(n, d['type']) for n, d in _dataset_roots(cfg)] == [('train_dataloader', 'A')]


def test_num_classes_of_every_kind_of_head():
    from vt_mm.engine.data_checks import _num_classes_of_model
    model = dict(decode_head=[dict(num_classes=3), dict(num_classes=5)],
                 auxiliary_head=dict(num_classes=5), head=dict(num_classes='x'),
                 roi_head=dict(bbox_head=[dict(num_classes=2), dict(num_classes=7), 'x',
                                          dict(num_classes=7)],
                               mask_head=dict(num_classes=7)),
                 bbox_head=[])
    # every stage of a list, by the path --cfg-options takes (mmengine: list indices as keys)
    assert _num_classes_of_model(model) == {
        'model.decode_head.0.num_classes': 3, 'model.decode_head.1.num_classes': 5,
        'model.auxiliary_head.num_classes': 5, 'model.roi_head.bbox_head.0.num_classes': 2,
        'model.roi_head.bbox_head.1.num_classes': 7, 'model.roi_head.bbox_head.3.num_classes': 7,
        'model.roi_head.mask_head.num_classes': 7}
    assert _num_classes_of_model(dict(roi_head='not a dict')) == {}


def test_ignore_index_of_a_model_without_heads():
    from mmengine.config import Config

    from vt_mm.engine.data_checks import label_settings
    assert label_settings(Config(dict(model=None))) == dict(ignore_index=255)
    assert label_settings(Config(dict(model=dict(decode_head=[dict(ignore_index=1),
                                                              dict(ignore_index=2),
                                                              dict(ignore_index=3)])))) == \
        dict(ignore_index=3)


class _Pipeline:

    def __init__(self, *transforms):
        self.transforms = list(transforms)


class _FakeDataset:
    """What the data checks read of an mmengine dataset."""

    def __init__(self, infos, transforms=(), classes=('a', 'b', 'c')):
        self.infos = infos
        self.metainfo = dict(classes=classes) if classes else {}
        self.pipeline = _Pipeline(*transforms)

    def get_data_info(self, idx):
        return dict(self.infos[idx])

    def prepare_data(self, idx):
        results = self.get_data_info(idx)
        for t in self.pipeline.transforms:
            results = t(results)
        return results

    def __len__(self):
        return len(self.infos)


def _seg_loader(label):
    """A stand-in for mmseg's LoadAnnotations (recognised by its class name and module)."""
    cls = type('LoadAnnotations', (), {'__module__': 'mmseg.datasets.transforms.loading'})
    cls.__call__ = lambda self, r: dict(r, gt_seg_map=label, ori_shape=label.shape[:2])
    return cls()


def test_seg_check_only_for_segmentation_datasets_with_classes():
    from vt_mm.engine.data_checks import SegLabelCheck, _seg_check_for
    loader = _seg_loader(np.zeros((2, 2), np.uint8))
    check = _seg_check_for(_FakeDataset([], [loader]), 7)
    assert isinstance(check, SegLabelCheck) and (check.num_classes, check.ignore_index) == (3, 7)
    assert _seg_check_for(_FakeDataset([], [loader], classes=None), 7) is None
    assert _seg_check_for(_FakeDataset([], [lambda r: r]), 7) is None
    other = type('LoadAnnotations', (), {'__module__': 'mmdet.datasets.transforms'})()
    assert _seg_check_for(_FakeDataset([], [other]), 7) is None
    no_pipeline = _FakeDataset([], [])
    no_pipeline.pipeline = None
    assert _seg_check_for(no_pipeline, 7) is None


def test_label_problems_without_a_path_or_an_ori_shape():
    from vt_mm.engine.data_checks import SegLabelCheck
    check = SegLabelCheck(3)
    results = dict(gt_seg_map=np.full((2, 3), 9, np.uint8), img=np.zeros((2, 3, 3)))
    assert check.problem(results).startswith('(label): label values 9 are outside [0, 3)')
    small = dict(gt_seg_map=np.zeros((2, 2), np.uint8), img=np.zeros((2, 3, 3)),
                 img_path='i.jpg')
    assert check.problem(small) == (
        "(label): the label map is 2x2 but its image i.jpg is 2x3; every label must have its "
        "image's size. Check that data_root and data_prefix.seg_map_path point at the labels "
        'of these images, or regenerate the label')
    assert check.problem(dict(img=np.zeros((2, 2, 3)))) is None


def test_guard_wraps_every_leaf_dataset_once_and_names_files_and_errors():
    from vt_mm.engine.data_checks import DataSampleError, guard_samples

    def explode(results):
        raise ValueError('')

    first = _FakeDataset([dict(img_path='a.jpg', seg_map_path='a.png', other=3)])
    second = _FakeDataset([dict(img_path='b.jpg', seg_map_path='', other=3, sample_idx=0)],
                          [explode])
    first._vtmm_guarded = True  # already guarded: skipped, the next one still guarded
    wrapper = type('Concat', (), {})()
    # the stack visits the last entry first: the guarded one comes before the other here
    wrapper.datasets = [type('Repeat', (), {'dataset': second})(), first]
    guard_samples(wrapper)
    assert getattr(second, '_vtmm_guarded', False) is True
    with pytest.raises(DataSampleError) as info:
        second.prepare_data(0)
    assert str(info.value) == (
        "_FakeDataset sample 0 could not be loaded: ValueError: (no message); files: "
        "{'img_path': 'b.jpg'}. Check or replace the file (a truncated download is the usual "
        'cause), or fix data_root / data_prefix if they point at the wrong files.')
    assert isinstance(info.value.__cause__, ValueError)
    first.prepare_data(0)  # untouched
    label = np.full((2, 2), 255, np.uint8)
    seg = _FakeDataset([dict(img_path='c.jpg', seg_map_path='c.png')], [_seg_loader(label)])
    guard_samples(seg)  # the default ignore index: 255
    assert seg.prepare_data(0)['gt_seg_map'] is label
    seg2 = _FakeDataset([dict(img_path='c.jpg', seg_map_path='c.png')], [_seg_loader(label)])
    guard_samples(seg2, ignore_index=0)
    with pytest.raises(DataSampleError, match=r'^_FakeDataset sample 0: c\.png: label values 255 '
                       r'are outside \[0, 3\) and are not the ignore index 0'):
        seg2.prepare_data(0)


def test_check_sample_messages():
    from vt_mm.engine.data_checks import SegLabelCheck, check_sample

    def broken(results):
        raise OSError('first line\nsecond line')

    dataset = _FakeDataset([dict(img_path='x.jpg', seg_map_path='x.png')])
    assert check_sample(dataset, 0, [lambda r: None], None) == (
        "sample 0 {'img_path': 'x.jpg', 'seg_map_path': 'x.png'}: a loading step dropped it")
    assert check_sample(dataset, 0, [broken], None) == (
        "sample 0 {'img_path': 'x.jpg', 'seg_map_path': 'x.png'}: cannot be read (OSError: "
        'first line); replace the file, or fix data_root / data_prefix if they point at the '
        'wrong files')
    assert 'cannot be read (KeyError: (no message))' in check_sample(
        dataset, 0, [lambda r: (_ for _ in ()).throw(KeyError())], None)
    loaded = [_seg_loader(np.full((2, 2), 9, np.uint8))]
    assert check_sample(dataset, 0, loaded, None) is None  # no label check: nothing to report
    assert 'label values 9' in check_sample(dataset, 0, loaded, SegLabelCheck(3))


def test_split_checks_go_on_past_a_bad_split_and_use_the_configs_ignore_index(
        lip_copy, tmp_path, tiny_config, capfd):
    from mmengine.config import Config

    from vt_mm.engine import data_checks
    (lip_copy / 'TrainVal_images' / 'train_id.txt').write_text('')  # empty train split
    val_labels = sorted((lip_copy / 'TrainVal_parsing_annotations' / 'val_segmentations').glob(
        '*.png'))
    _label_value(val_labels[0], 250)
    extra = "model = dict(decode_head=dict(ignore_index=250))\n"
    cfg = Config.fromfile(tiny_config(tmp_path, lip_copy, extra=extra))
    problems, checked = data_checks.check_splits(cfg, ['train_dataloader', 'val_dataloader'],
                                                 None, progress=True)
    assert len(problems) == 1 and checked == 3  # 250 is the ignore index here: no problem
    assert problems[0].startswith('train_dataloader: the dataset (LIPDataset, data_root=')
    assert 'val_dataloader: LIPDataset, 3 of 3 samples' in capfd.readouterr().out


def test_preflight_defaults_and_the_listing_of_two_splits(lip_copy, tmp_path, tiny_config,
                                                          monkeypatch):
    import inspect

    from mmengine.config import Config

    from vt_mm.engine import data_checks
    assert inspect.signature(data_checks.preflight_data).parameters['max_samples'].default == 16
    assert inspect.signature(data_checks.check_splits).parameters['max_samples'].default == 16
    assert inspect.signature(data_checks.guard_samples).parameters['ignore_index'].default == 255
    seen = []
    original = data_checks.check_splits
    monkeypatch.setattr(data_checks, 'check_splits', lambda cfg, loaders, n: seen.append(n) or
                        original(cfg, loaders, n))
    _label_value(_labels(lip_copy)[0], 40)
    cfg = Config.fromfile(tiny_config(tmp_path, lip_copy))
    with pytest.raises(data_checks.DataCheckError) as info:
        data_checks.preflight_data(cfg, ('train_dataloader', 'val_dataloader'))
    assert seen == [16]
    assert str(info.value).startswith('1 problems in the data (11 sampled samples of '
                                      'train_dataloader, val_dataloader checked):\n  ')


def test_build_dataset_messages(lip_copy, tmp_path, tiny_config):
    from mmengine.config import Config

    from vt_mm.engine import data_checks
    cfg = Config.fromfile(tiny_config(tmp_path, lip_copy))
    ds_cfg = cfg.train_dataloader.dataset
    before = dict(ds_cfg)
    dataset = data_checks.build_dataset(cfg, ds_cfg)
    assert len(dataset) == 8 and dict(ds_cfg) == before  # the config is not changed
    with pytest.raises(FileNotFoundError, match=r"^dataset: data_root '/nowhere' does not exist"):
        data_checks.build_dataset(cfg, dict(ds_cfg, data_root='/nowhere'))
    with pytest.raises(FileNotFoundError, match=r"^val_dataloader: data_root '/nowhere'"):
        data_checks.build_dataset(cfg, dict(ds_cfg, data_root='/nowhere'), 'val_dataloader')
    (lip_copy / 'TrainVal_images' / 'train_id.txt').write_text('')
    with pytest.raises(data_checks.DataCheckError) as info:
        data_checks.build_dataset(cfg, ds_cfg)
    assert str(info.value) == (
        f"the dataset (LIPDataset, data_root={str(lip_copy)!r}, ann_file="
        f"'TrainVal_images/train_id.txt', data_prefix={dict(ds_cfg.data_prefix)}) has no "
        "samples: its id list 'TrainVal_images/train_id.txt' is empty. Put the sample ids in the "
        'ann_file, or fix data_root / ann_file / data_prefix.')
    no_ids = dict(ds_cfg, ann_file='', data_prefix=dict(img_path='nothing_here',
                                                         seg_map_path='nothing_here'))
    (lip_copy / 'nothing_here').mkdir()
    with pytest.raises(data_checks.DataCheckError, match=r'has no samples: no files match its '
                       r'data_prefix\. Put the sample ids'):
        data_checks.build_dataset(cfg, no_ids)


def test_build_dataset_when_the_filter_removes_every_sample(monkeypatch, lip_root, tmp_path,
                                                            tiny_config):
    from mmengine.config import Config
    from mmseg.datasets import LIPDataset

    from vt_mm.engine import data_checks
    cfg = Config.fromfile(tiny_config(tmp_path, lip_root))

    def filtered(self):
        raise ValueError('need at least one array to concatenate')

    monkeypatch.setattr(LIPDataset, 'full_init', filtered)
    with pytest.raises(data_checks.DataCheckError, match=r'\) lists 8 samples but its filter_cfg '
                       r'removes all of them; relax filter_cfg$'):
        data_checks.build_dataset(cfg, cfg.train_dataloader.dataset)

    def other(self):
        raise ValueError('another problem')

    monkeypatch.setattr(LIPDataset, 'full_init', other)
    with pytest.raises(ValueError, match='^another problem$'):
        data_checks.build_dataset(cfg, cfg.train_dataloader.dataset)


def test_datasets_without_a_file_list_are_returned_as_built(monkeypatch):
    from mmengine.config import Config

    from vt_mm.engine import data_checks

    class Plain:
        pass

    built = Plain()
    from mmengine.registry import DATASETS
    monkeypatch.setattr(DATASETS, 'build', lambda cfg: built)
    cfg = Config(dict(default_scope='mmseg'))
    assert data_checks.build_dataset(cfg, dict(type='Plain')) is built


@pytest.mark.slow
def test_num_classes_mismatch_is_refused(lip_root, tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, lip_root, deterministic=True)
    code, out = _run(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w')] + _iters(2) +
                     ['model.decode_head.num_classes=19'], expect_ok=False)
    assert code != 0
    assert 'model.decode_head.num_classes=19 but the training dataset (LIPDataset) has 20' in out


@pytest.mark.slow
def test_truncated_image_error_names_the_file(lip_root, tmp_path, tiny_config):
    import shutil
    root = tmp_path / 'lip'
    shutil.copytree(lip_root, root)
    images = sorted((root / 'TrainVal_images' / 'train_images').glob('*.jpg'))
    data = images[0].read_bytes()
    images[0].write_bytes(data[:len(data) // 2])  # a truncated download
    cfg = tiny_config(tmp_path, root, deterministic=True)
    code, out = _run(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w')] + _iters(8),
                     expect_ok=False)
    assert code != 0
    # the preflight reads the first samples before training starts
    assert f'{images[0]}' in out and 'cannot be read' in out, out[-3000:]
    assert 'Iter(train)' not in out


def test_num_classes_listing_at_six_and_seven_classes():
    from mmengine.config import Config

    from vt_mm.engine.data_checks import check_num_classes
    cfg = Config(dict(model=dict(decode_head=dict(num_classes=2))))
    for classes, shown in (('abcdef', "('a', 'b', 'c', 'd', 'e', 'f'); "),
                           ('abcdefg', "('a', 'b', 'c', 'd', 'e', 'f')...; ")):
        dataset = type('Data', (), {'metainfo': dict(classes=tuple(classes))})()
        with pytest.raises(ValueError) as info:
            check_num_classes(cfg, dataset)
        assert str(info.value) == (
            f'model.decode_head.num_classes=2 but the training dataset (Data) has '
            f'{len(classes)} classes {shown}set model.decode_head.num_classes={len(classes)} '
            'or the dataset metainfo')
    check_num_classes(cfg, type('Bare', (), {})())  # no metainfo: nothing to compare
    stages = Config(dict(model=dict(roi_head=dict(bbox_head=[dict(num_classes=3),
                                                             dict(num_classes=4)]))))
    with pytest.raises(ValueError, match=r'^model\.roi_head\.bbox_head\.1\.num_classes=4 but '):
        check_num_classes(stages, type('Data', (), {'metainfo': dict(classes='abc')})())


def test_a_stage_of_a_list_is_set_by_the_path_in_the_message():
    """The path the message names is one --cfg-options takes (mmengine's list-index keys)."""
    from mmengine.config import Config
    cfg = Config(dict(model=dict(roi_head=dict(bbox_head=[dict(num_classes=3),
                                                          dict(num_classes=4)]))))
    cfg.merge_from_dict({'model.roi_head.bbox_head.1.num_classes': 3})
    assert [h.num_classes for h in cfg.model.roi_head.bbox_head] == [3, 3]


def test_describe_a_dataset_config_without_ann_file_or_prefix():
    from vt_mm.engine.data_checks import _describe
    assert _describe(dict(type='X', data_root='r')) == (
        "X, data_root='r', ann_file=None, data_prefix={}")


def test_build_dataset_leaves_the_callers_config_as_it_was(lip_copy, tmp_path, tiny_config):
    import copy

    from mmengine.config import Config

    from vt_mm.engine import data_checks
    cfg = Config.fromfile(tiny_config(tmp_path, lip_copy))
    ds_cfg = cfg.val_dataloader.dataset
    before = copy.deepcopy(ds_cfg.to_dict())
    data_checks.build_dataset(cfg, ds_cfg, 'val_dataloader')
    data_checks.build_dataset(cfg, ds_cfg, 'val_dataloader')  # twice: the same result
    assert ds_cfg.to_dict() == before and 'lazy_init' not in ds_cfg


def test_eight_bit_pngs_are_passed_on_their_header_alone(tmp_path, monkeypatch):
    """An 8-bit (or lower) PNG decodes to uint8 and cannot hold a value above 255: no decoding;
    a 16-bit one is decoded, and 256 is the first value that is refused."""
    import mmcv

    from vt_mm.engine.data_checks import label_file_problem
    decoded = []
    original = mmcv.imfrombytes
    monkeypatch.setattr(mmcv, 'imfrombytes', lambda *a, **k: decoded.append(1) or original(
        *a, **k))
    Image.fromarray(np.full((6, 5), 7, np.uint8)).save(tmp_path / 'grey.png')
    palette = Image.fromarray(np.full((6, 5), 3, np.uint8)).convert('P')
    palette.save(tmp_path / 'palette.png')
    Image.fromarray(np.full((6, 5), 1, np.uint8)).convert('1').save(tmp_path / 'bits.png')
    for name in ('grey.png', 'palette.png', 'bits.png'):
        assert label_file_problem(str(tmp_path / name)) is None
    assert decoded == []
    for value, problem in ((255, False), (256, True)):
        label = np.zeros((6, 5), np.uint16)
        label[0, 0] = value
        Image.fromarray(label).save(tmp_path / f'{value}.png')
        assert (label_file_problem(str(tmp_path / f'{value}.png')) is not None) is problem
    assert len(decoded) == 2
    (tmp_path / 'short.png').write_bytes(b'\x89PNG\r\n\x1a\n')  # a header cut short
    assert label_file_problem(str(tmp_path / 'short.png')) is None  # unreadable: read later
    assert len(decoded) == 3


def test_label_files_are_decoded_as_mmseg_decodes_them(tmp_path, monkeypatch):
    import mmcv

    from vt_mm.engine.data_checks import label_file_problem
    seen = []
    monkeypatch.setattr(mmcv, 'imfrombytes', lambda content, flag, backend: seen.append(
        (flag, backend)) or np.zeros((2, 2), np.int32))
    Image.fromarray(np.zeros((6, 5), np.int32)).save(tmp_path / 'l.tif')
    assert label_file_problem(str(tmp_path / 'l.tif')) is None
    assert seen == [('unchanged', 'pillow')]


def test_label_maps_of_other_ranks_are_named_by_their_shape():
    from vt_mm.engine.data_checks import SegLabelCheck
    check = SegLabelCheck(3)
    four = dict(gt_seg_map=np.zeros((2, 3, 3, 1), np.uint8), seg_map_path='l.png',
                img=np.zeros((2, 3, 3)))
    assert check.problem(four).startswith('l.png: the label map has shape (2, 3, 3, 1); labels '
                                          'must be one channel')
    one = dict(gt_seg_map=np.zeros((6, ), np.uint8), img=np.zeros((2, 3, 3)))
    assert check.problem(one).startswith('(label): the label map has shape (6,); labels')


def test_seg_check_for_a_dataset_without_metainfo_or_pipeline():
    from vt_mm.engine.data_checks import _loading_steps, _seg_check_for
    bare = type('Bare', (), {})()
    assert _seg_check_for(bare, 255) is None and _loading_steps(bare) == []
    with_classes = type('Classes', (), {'metainfo': dict(classes=('a', ))})()
    assert _seg_check_for(with_classes, 255) is None


def test_split_checks_defaults_skipped_loaders_and_names(monkeypatch, capsys, tmp_path):
    from mmengine.config import Config

    from vt_mm.engine import data_checks
    built = {}

    def build(cfg, ds_cfg, split='dataset'):
        if ds_cfg['type'] == 'Missing':
            raise FileNotFoundError(f'{split}: data_root does not exist')
        built[split] = _FakeDataset([dict(img_path=f'{i}.jpg') for i in range(ds_cfg['n'])])
        return built[split]

    monkeypatch.setattr(data_checks, 'build_dataset', build)
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type='A', n=40)),
                      val_dataloader=dict(dataset=dict(type='A', n=17)),
                      test_dataloader=dict(dataset=dict(type='Missing'))))
    # the defaults: 16 samples, no progress output
    assert data_checks.check_splits(cfg, ['train_dataloader']) == ([], 16)
    assert capsys.readouterr().out == ''
    # a loader not asked for is skipped, and the next one is still checked
    assert data_checks.check_splits(cfg, ['val_dataloader'], 17) == ([], 17)
    assert sorted(built) == ['train_dataloader', 'val_dataloader']
    with pytest.raises(FileNotFoundError, match='^test_dataloader: data_root does not exist$'):
        data_checks.check_splits(cfg, ['test_dataloader'])
    # the progress bar counts the samples of each split
    data_checks.check_splits(cfg, ['val_dataloader'], 5, progress=True)
    out = capsys.readouterr().out
    assert out.startswith('val_dataloader: _FakeDataset, 5 of 17 samples\n')
    assert ' 5/5,' in out and out.endswith('\n')


def test_an_empty_split_without_a_file_list_has_no_samples_to_check(monkeypatch):
    from mmengine.config import Config

    from vt_mm.engine import data_checks
    monkeypatch.setattr(data_checks, 'build_dataset', lambda cfg, ds_cfg, split: _FakeDataset([]))
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type='A'))))
    assert data_checks.check_splits(cfg, ['train_dataloader']) == ([], 0)
