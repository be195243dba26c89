"""Data checked before it costs a run (vt_mm/engine/data_checks.py): each bad input names the file
(or the id list), what is wrong and the setting that fixes it, whatever the batch size."""
import os
import os.path as osp
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import vt_mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
LABELS = osp.join('TrainVal_parsing_annotations', 'train_segmentations')


def _run(args, timeout=600):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


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
