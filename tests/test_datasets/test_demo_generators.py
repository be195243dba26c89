"""The generated datasets (vt_mm/datasets/demo_*.py) and their completion stamps.

The generators are contracts: the demo results in the docs (make demo's mIoU, the parity and
pretraining studies) were measured on exactly this data, and the same arguments must give the
same files. Each generator's output at a small size is pinned here by a digest of its lossless
files (PNG pixel arrays, JSON and text files) and the mean colour of each JPEG image (within
1 grey level: JPEG codecs may round differently), so a changed constant in a drawing routine
fails here, not silently in a benchmark months later."""
import glob
import hashlib
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from vt_mm.datasets import _stamp, demo_classes, demo_cue, demo_lip, demo_shapes


def _digest(root):
    """(sha256 of the lossless files, {jpeg path: mean RGB})."""
    sha = hashlib.sha256()
    means = {}
    for path in sorted(glob.glob(osp.join(str(root), '**', '*'), recursive=True)):
        if osp.isdir(path):
            continue
        rel = osp.relpath(path, str(root))
        if path.endswith('.jpg'):
            pixels = np.asarray(Image.open(path).convert('RGB'), np.float64)
            means[rel] = pixels.reshape(-1, 3).mean(0)
            continue
        sha.update(rel.encode())
        if path.endswith('.png'):
            array = np.asarray(Image.open(path))
            sha.update(str(array.shape).encode() + np.ascontiguousarray(array).tobytes())
        else:
            with open(path, 'rb') as f:
                sha.update(f.read())
    return sha.hexdigest()[:20], means


def _check(root, expected_sha, expected_means):
    sha, means = _digest(root)
    assert sha == expected_sha
    assert sorted(means) == sorted(expected_means)
    for rel, mean in means.items():
        assert np.abs(mean - np.array(expected_means[rel])).max() < 1.0, rel


GENERATORS = {
    'lip': lambda root: demo_lip.make_demo_lip(str(root), num_train=2, num_val=1, size=48, seed=3),
    'cue': lambda root: demo_cue.make_cue_seg(str(root), num_train=2, num_val=1, size=48, seed=3),
    'coco': lambda root: demo_shapes.make_demo_coco(str(root), split='val', num_images=2,
                                                    size=(48, 40), max_objects=3, seed=3),
    'imagefolder': lambda root: demo_shapes.make_demo_imagefolder(str(root), split='val',
                                                                   per_class=1, size=32, seed=3),
    'ade20k': lambda root: demo_shapes.make_demo_ade20k(str(root), num_train=2, num_val=1,
                                                        size=(48, 40), max_objects=3, seed=3),
    'classes': lambda root: demo_classes.make_demo_classes(str(root), train_per_class=1,
                                                           val_per_class=1, size=24, seed=3),
}


GOLDEN = {
    'lip': ('e7e8eeeb4430f12d7568', {
        'TrainVal_images/train_images/00000_train.jpg': [147.1, 89.1, 115.1],
        'TrainVal_images/train_images/00001_train.jpg': [137.8, 93.5, 181.0],
        'TrainVal_images/val_images/00000_val.jpg': [161.9, 132.8, 144.2]}),
    'cue': ('4c81cd917c422bc9bbb2', {}),
    'coco': ('6df921b9e1923a779ca0', {'val/000000.jpg': [150.1, 96.0, 108.5],
                                      'val/000001.jpg': [105.1, 159.7, 133.3]}),
    'imagefolder': ('e3b0c44298fc1c149afb', {'val/circle/0000.jpg': [117.9, 153.6, 129.3],
                                             'val/square/0000.jpg': [168.4, 88.3, 93.3],
                                             'val/triangle/0000.jpg': [100.4, 123.7, 117.0]}),
    'ade20k': ('388b6e3b9ed410123139', {
        'images/training/ADE_train_00000000.jpg': [147.9, 95.8, 111.6],
        'images/training/ADE_train_00000001.jpg': [98.8, 159.9, 130.5],
        'images/validation/ADE_valid_00000000.jpg': [112.9, 168.4, 90.7]}),
    'classes': ('ebd55f5aa83356c232ae', {}),
}


@pytest.mark.parametrize('name', list(GENERATORS))
def test_generated_data_is_pinned(name, tmp_path):
    GENERATORS[name](tmp_path)
    _check(tmp_path, *GOLDEN[name])


@pytest.mark.parametrize('name', ['lip', 'cue', 'classes'])
def test_stamp_reuses_only_identical_arguments(name, tmp_path):
    """Data written with the same arguments is reused; any other argument, or overwrite,
    writes it again (the stamp names every argument)."""
    make = {'lip': demo_lip.make_demo_lip, 'cue': demo_cue.make_cue_seg,
            'classes': demo_classes.make_demo_classes}[name]
    sizes = {'lip': dict(num_train=2, num_val=1), 'cue': dict(num_train=2, num_val=1),
             'classes': dict(train_per_class=1, val_per_class=1)}[name]
    base = dict(sizes, size=24, seed=0)
    make(str(tmp_path), **base)
    marker = tmp_path / 'marker.txt'
    stamp = next(p for p in tmp_path.iterdir() if p.name.startswith('.'))
    calls = []
    original = Image.Image.save

    def counting_save(self, *args, **kwargs):
        calls.append(args[0])
        return original(self, *args, **kwargs)

    Image.Image.save = counting_save
    try:
        marker.write_text('x')
        make(str(tmp_path), **base)
        assert calls == [], 'identical arguments must reuse the data'
        for key in list(base):
            changed = dict(base, **{key: base[key] + 1})
            calls.clear()
            make(str(tmp_path), **changed)
            assert calls, f'{key} changed but the data was reused'
            make(str(tmp_path), **base)  # back to the base data
        calls.clear()
        make(str(tmp_path), **base, overwrite=True)
        assert calls, 'overwrite=True must write the data again'
    finally:
        Image.Image.save = original
    assert stamp.read_text().endswith('\n')


def test_stamp_helpers(tmp_path):
    assert _stamp.is_current(str(tmp_path), '.s', 'a') is False
    _stamp.write_stamp(str(tmp_path), '.s', 'a,b')
    assert (tmp_path / '.s').read_text() == 'a,b\n'
    assert _stamp.is_current(str(tmp_path), '.s', 'a,b') is True
    assert _stamp.is_current(str(tmp_path), '.s', 'a,b', overwrite=True) is False
    assert _stamp.is_current(str(tmp_path), '.s', 'a') is False
    assert _stamp.is_current(str(tmp_path), '.other', 'a,b') is False


def test_lip_demo_arguments_and_checks(tmp_path):
    assert demo_lip.make_demo_lip(str(tmp_path), num_train=2, num_val=1, size=32) == dict(
        train=2, val=1)
    assert (tmp_path / 'TrainVal_images' / 'train_id.txt').read_text() == \
        '00000_train\n00001_train\n'
    assert (tmp_path / 'TrainVal_images' / 'val_id.txt').read_text() == '00000_val\n'
    demo_lip.check_lip_root(str(tmp_path))
    demo_lip.check_lip_root(str(tmp_path), 'val')
    (tmp_path / 'TrainVal_parsing_annotations' / 'val_segmentations').rename(tmp_path / 'moved')
    demo_lip.check_lip_root(str(tmp_path), 'train')
    with pytest.raises(FileNotFoundError, match=r"LIP data not found: '.*val_segmentations' does "
                       r'not exist\. .*make_demo_lip\.py --out '):
        demo_lip.check_lip_root(str(tmp_path))


def test_class_demo_refuses_sizes_it_cannot_draw(tmp_path):
    """19 is the smallest side it draws (the check said 16, and 16-18 failed in numpy)."""
    assert demo_classes.MIN_SIZE == 19
    demo_classes.make_demo_classes(str(tmp_path / 'ok'), 1, 1, size=19)
    with pytest.raises(ValueError, match=r'^size=18 is too small to draw the clutter and '
                       r'textures; use >= 19$'):
        demo_classes.make_demo_classes(str(tmp_path), 1, 1, size=18)
    for train, val in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match=rf'train_per_class={train} and val_per_class={val} '
                           'must be >= 1'):
            demo_classes.make_demo_classes(str(tmp_path), train, val)


def test_cue_classes_and_coco_config():
    assert demo_cue.CUE_CLASSES[:2] == ('background', 'cue')
    for colour in range(len(demo_cue.CUE_COLOURS)):
        for kind in range(len(demo_cue.SHAPE_KINDS)):
            name = demo_cue.CUE_CLASSES[demo_cue.cue_class(kind, colour)]
            assert name == f'{demo_cue.SHAPE_KINDS[kind]}-{demo_cue.CUE_COLOURS[colour][0]}'
    text = demo_shapes.coco_data_config('/d', scale=(80, 64), batch_size=3, val_batch_size=5,
                                        mask=True)
    assert "data_root = '/d'" in text and 'with_mask=True' in text
    assert "scale=(80, 64)" in text and 'batch_size=3' in text and 'batch_size=5' in text
    assert "metric=['bbox', 'segm']" in text
    assert "metric='bbox'" in demo_shapes.coco_data_config('/d')
    assert 'with_mask=False' in demo_shapes.coco_data_config('/d')


def _array_digest(arrays):
    sha = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        sha.update(str((a.shape, a.dtype.str)).encode() + a.tobytes())
    return sha.hexdigest()[:20]


def _samples(name):
    """Many samples of each generator, as arrays before any encoding (every outfit, accessory,
    texture and shape is drawn in them)."""
    if name == 'lip':
        rng = np.random.default_rng(11)
        return [a for _ in range(40) for a in demo_lip.make_sample(48, rng)]
    if name == 'cue':
        rng = np.random.default_rng(12)
        return [a for _ in range(30) for a in demo_cue.make_cue_sample(48, rng)]
    if name == 'cue-sizes':  # the cue's side and margin grow with the image past 48
        out = []
        for size in (24, 32, 128):
            rng = np.random.default_rng(17)
            out += [a for _ in range(6) for a in demo_cue.make_cue_sample(size, rng)]
        return out
    if name == 'classes':
        rng = np.random.default_rng(13)
        return [demo_classes.make_class_sample(k, 24, rng) for k in range(100)]
    if name == 'coco':
        rng = np.random.default_rng(14)
        out = []
        for _ in range(12):
            image, objects = demo_shapes.coco_sample((40, 32), 3, rng)
            out += [image, np.array([v for o in objects for v in
                                     [o['category_id'], o['area'], *o['bbox'],
                                      *o['segmentation'][0]]], np.float64)]
        return out
    if name == 'ade20k':
        rng = np.random.default_rng(15)
        return [a for _ in range(12) for a in demo_shapes.ade20k_sample((40, 32), 3, rng)]
    rng = np.random.default_rng(16)
    return [demo_shapes.centred_shape(k % 3, 32, rng) for k in range(12)]


SAMPLE_GOLDEN = {
    'lip': '781860cbbf979e6eff5a',
    'cue': '219086c26bcb886771ae',
    'cue-sizes': 'f438cf8206986616e808',
    'classes': '4d3320160e2e11715fd9',
    'coco': '8d3aa49d850948bbc9b8',
    'ade20k': '3290380aff26227f12b4',
    'imagefolder': '6af94c9342fc69244af9',
}


@pytest.mark.parametrize('name', list(SAMPLE_GOLDEN))
def test_generated_samples_are_pinned_pixel_for_pixel(name):
    assert _array_digest(_samples(name)) == SAMPLE_GOLDEN[name]


def test_every_lip_outfit_and_accessory_is_drawn_in_the_pinned_samples():
    labels = _samples('lip')[1::2]
    present = set(np.unique(np.concatenate([np.unique(lbl) for lbl in labels])).tolist())
    assert present == set(range(20))  # all 20 LIP classes, so every branch draws


def test_jpeg_files_are_written_at_quality_95(tmp_path):
    reference = tmp_path / 'reference.jpg'
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(reference, quality=95)
    tables = Image.open(reference).quantization
    demo_lip.make_demo_lip(str(tmp_path / 'lip'), 1, 1, size=24)
    demo_shapes.make_demo_coco(str(tmp_path / 'coco'), num_images=1, size=(24, 24))
    demo_shapes.make_demo_imagefolder(str(tmp_path / 'folder'), per_class=1, size=24)
    demo_shapes.make_demo_ade20k(str(tmp_path / 'ade'), 1, 1, size=(24, 24))
    jpegs = sorted(glob.glob(str(tmp_path / '*' / '**' / '*.jpg'), recursive=True))
    assert len(jpegs) == 1 + 1 + 1 + 3 + 1 + 1
    for path in jpegs:
        assert Image.open(path).quantization == tables, path


def test_the_generators_defaults_are_the_documented_demo_data():
    """make demo's numbers were measured on the defaults' data: they are part of the contract."""
    import inspect

    def defaults(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty}

    assert defaults(demo_lip.make_demo_lip) == dict(num_train=400, num_val=50, size=128, seed=0,
                                                    overwrite=False)
    assert defaults(demo_cue.make_cue_seg) == dict(num_train=300, num_val=60, size=128, seed=0,
                                                   overwrite=False)
    assert defaults(demo_cue.make_cue_sample) == dict(min_dist=0.45)
    assert defaults(demo_classes.make_demo_classes) == dict(
        train_per_class=200, val_per_class=20, size=64, seed=0, overwrite=False)
    assert defaults(demo_shapes.make_demo_coco) == dict(split='train', num_images=8,
                                                        size=(128, 96), max_objects=3, seed=0)
    assert defaults(demo_shapes.make_demo_imagefolder) == dict(split='train', per_class=4,
                                                               size=64, seed=0)
    assert defaults(demo_shapes.make_demo_ade20k) == dict(num_train=8, num_val=2, size=(96, 80),
                                                          max_objects=3, seed=0)
    assert defaults(demo_shapes.coco_data_config) == dict(scale=(160, 128), batch_size=4,
                                                          val_batch_size=4, mask=False)


@pytest.mark.parametrize('make,kwargs', [
    (demo_lip.make_demo_lip, dict(num_train=2, num_val=1, size=24)),
    (demo_cue.make_cue_seg, dict(num_train=2, num_val=1, size=24)),
    (demo_classes.make_demo_classes, dict(train_per_class=1, val_per_class=1, size=24))])
def test_reused_data_returns_what_a_fresh_write_returns(make, kwargs, tmp_path):
    first = make(str(tmp_path), **kwargs)
    assert make(str(tmp_path), **kwargs) == first


def test_coco_data_is_written_again_into_the_same_folders(tmp_path):
    """A second split, or the same one again, goes into the existing folders."""
    first = demo_shapes.make_demo_coco(str(tmp_path), num_images=1, size=(24, 24))
    again = demo_shapes.make_demo_coco(str(tmp_path), num_images=1, size=(24, 24))
    val = demo_shapes.make_demo_coco(str(tmp_path), split='val', num_images=1, size=(24, 24))
    assert first == again and val != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ['annotations', 'train', 'val']
    assert first == dict(ann_file=osp.join('annotations', 'instances_train.json'),
                         img_dir='train/')


class _Recorder:
    """Stands in for the drawing and the writing while a generator runs at its defaults: the
    sample functions return blank arrays of the asked size, ``Image.save`` records the path, and
    ``np.random.default_rng`` records its seed. What the generator asks for is the contract;
    drawing thousands of images is not needed to read it."""

    def __init__(self, monkeypatch):
        self.reset()
        original_rng = np.random.default_rng

        def rng(seed=None):
            self.seeds.append(seed)
            return original_rng(seed)

        monkeypatch.setattr(np.random, 'default_rng', rng)
        monkeypatch.setattr(Image.Image, 'save',
                            lambda image, path, **kwargs: self.saved.append(
                                (osp.basename(path), image.size, kwargs)))

    def reset(self):
        self.samples, self.saved, self.seeds = [], [], []

    def blank(self, name, channels=3):
        def sample(size, *args):
            w, h = (size, size) if isinstance(size, int) else size
            self.samples.append((name, size) + args[:-1])
            rgb = np.zeros((h, w, 3), np.uint8)
            return rgb if channels == 3 else (rgb, np.zeros((h, w), np.uint8))
        return sample


def test_each_generator_called_at_its_defaults_writes_the_documented_demo_data(
        tmp_path, monkeypatch):
    """The defaults through a call (mutmut's trampoline answers ``inspect.signature`` with the
    source's defaults, so the signature test above cannot catch a changed default)."""
    rec = _Recorder(monkeypatch)
    monkeypatch.setattr(demo_lip, 'make_sample', rec.blank('lip', 2))
    assert demo_lip.make_demo_lip(str(tmp_path / 'lip')) == dict(train=400, val=50)
    assert rec.seeds == [0, 1_000_003]
    assert rec.samples == [('lip', 128)] * 450
    assert rec.saved[0] == ('00000_train.jpg', (128, 128), dict(quality=95))
    assert rec.saved[-1] == ('00049_val.png', (128, 128), {})
    assert (tmp_path / 'lip' / '.demo_lip').read_text() == '400,50,128,0\n'

    rec.reset()
    monkeypatch.setattr(demo_cue, 'make_cue_sample', lambda size, rng: rec.blank('cue', 2)(
        size, rng))
    assert demo_cue.make_cue_seg(str(tmp_path / 'cue')) == dict(train=300, val=60)
    assert rec.seeds == [0, 7919]
    assert rec.samples == [('cue', 128)] * 360 and len(rec.saved) == 720
    assert rec.saved[-1] == ('00059.png', (128, 128), {})

    rec.reset()
    monkeypatch.setattr(demo_classes, 'make_class_sample',
                        lambda label, size, rng: rec.blank('classes')(size, label, rng))
    demo_classes.make_demo_classes(str(tmp_path / 'classes'))
    assert rec.seeds == [[0, 0], [0, 1]]
    assert rec.samples == ([('classes', 64, k) for k in range(100) for _ in range(200)]
                           + [('classes', 64, k) for k in range(100) for _ in range(20)])
    assert rec.saved[-1] == ('00019.png', (64, 64), {})

    rec.reset()
    monkeypatch.setattr(demo_shapes, 'coco_sample',
                        lambda size, max_objects, rng: (rec.blank('coco')(size, max_objects, rng),
                                                        []))
    assert demo_shapes.make_demo_coco(str(tmp_path / 'coco')) == dict(
        ann_file=osp.join('annotations', 'instances_train.json'), img_dir='train/')
    assert rec.seeds == [0] and rec.samples == [('coco', (128, 96), 3)] * 8
    assert (tmp_path / 'coco' / 'annotations' / 'instances_train.json').is_file()

    rec.reset()
    monkeypatch.setattr(demo_shapes, 'centred_shape',
                        lambda label, size, rng: rec.blank('folder')(size, label, rng))
    assert demo_shapes.make_demo_imagefolder(str(tmp_path / 'folder')) == list(
        demo_shapes.SHAPE_CLASSES)
    assert rec.seeds == [0] and rec.samples == [('folder', 64, k) for k in range(3) for _ in
                                                range(4)]
    assert sorted(p.name for p in (tmp_path / 'folder').iterdir()) == ['train']

    rec.reset()
    monkeypatch.setattr(demo_shapes, 'ade20k_sample', rec.blank('ade20k', 2))
    demo_shapes.make_demo_ade20k(str(tmp_path / 'ade20k'))
    assert rec.seeds == [0] and rec.samples == [('ade20k', (96, 80), 3)] * 10
    assert [name for name, _, _ in rec.saved][-2:] == ['ADE_valid_00000001.jpg',
                                                        'ADE_valid_00000001.png']

    text = demo_shapes.coco_data_config('/d')
    assert text.count('scale=(160, 128)') == 2
    assert 'train_dataloader = dict(batch_size=4,' in text
    assert 'val_dataloader = dict(batch_size=4,' in text


def test_a_cue_sample_keeps_shapes_045_of_the_side_from_the_cue_by_default():
    def samples(**kwargs):
        return [a for seed in range(20)
                for a in demo_cue.make_cue_sample(48, np.random.default_rng(seed), **kwargs)]

    default = samples()
    for a, b in zip(default, samples(min_dist=0.45)):
        np.testing.assert_array_equal(a, b)
    for other in (0.4, 0.46):  # either side of the default changes some of these samples
        assert not all(np.array_equal(a, b) for a, b in zip(default, samples(min_dist=other)))


def test_lip_colour_jitter_stays_in_the_colour_range_and_reaches_its_ends():
    """Class colours near 0 and 255 (LIP's black and white classes) are clipped, not wrapped:
    both ends are reached and none is passed."""
    rng = np.random.default_rng(0)
    values = np.array([demo_lip._jitter(rng, (250, 10, 128)) for _ in range(400)])
    assert values.dtype.kind == 'i'
    assert values[:, 0].max() == 255 and values[:, 1].min() == 0
    assert values.min() == 0 and values.max() == 255
    assert values[:, 2].min() >= 103 and values[:, 2].max() <= 153
    assert values[:, 2].min() == 103 and values[:, 2].max() == 153  # +-25 inclusive


class _ScriptedRng:
    """Returns the given colour pairs from ``integers`` in order."""

    def __init__(self, colours):
        self.colours = list(colours)

    def integers(self, low, high, n):
        assert (low, high, n) == (0, 256, 3)
        return np.array(self.colours.pop(0))


@pytest.mark.parametrize('distance,taken', [(119, False), (120, True)])
def test_texture_colours_are_at_least_120_apart(distance, taken):
    """120 (L1) is the first distance accepted, 119 the last refused."""
    near, far = (10, 20, 30), (10 + distance, 20, 30)
    fallback = ((0, 0, 0), (200, 200, 200))
    a, b = demo_classes._colours(_ScriptedRng([near, far, *fallback]))
    assert a.dtype == b.dtype == np.float32
    expected = (near, far) if taken else fallback
    np.testing.assert_array_equal(a, expected[0])
    np.testing.assert_array_equal(b, expected[1])


def test_an_unknown_texture_is_named_with_the_choices():
    with pytest.raises(ValueError) as info:
        demo_classes._texture('plaid', 24, (12, 12), 6.0, np.random.default_rng(0))
    assert str(info.value) == f"unknown texture 'plaid'; one of {demo_classes.TEXTURES}"


@pytest.mark.parametrize('kind', demo_classes.TEXTURES)
def test_every_texture_is_a_float32_map_in_the_unit_range(kind):
    t = demo_classes._texture(kind, 24, (12.0, 12.0), 8.0, np.random.default_rng(1))
    assert t.shape == (24, 24) and t.dtype == np.float32
    assert t.min() >= 0 and t.max() <= 1
    assert (t.max() > t.min()) == (kind != 'solid')


def test_classification_and_ade20k_data_are_written_again_into_the_same_folders(tmp_path):
    """A second run into the same root (a rerun of a benchmark) writes the same files over the
    first run's, as make_demo_coco does."""
    for _ in range(2):
        demo_shapes.make_demo_imagefolder(str(tmp_path / 'folder'), per_class=1, size=24)
        demo_shapes.make_demo_ade20k(str(tmp_path / 'ade'), 1, 1, size=(24, 24))
    assert len(list((tmp_path / 'folder').rglob('*.jpg'))) == 3
    assert len(list((tmp_path / 'ade').rglob('*.jpg'))) == 2
    assert len(list((tmp_path / 'ade').rglob('*.png'))) == 2
