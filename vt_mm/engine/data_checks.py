"""Data checks: before a run costs anything, and on every sample while it runs.

What mmengine and the toolboxes report badly, each turned into an error that names the file (or
the id list), what is wrong and the setting that fixes it:

* a missing ``data_root`` (:func:`check_data`);
* an empty split: mmengine's ``need at least one array to concatenate``
  (:func:`build_dataset`);
* a model whose heads have another number of classes than the dataset (:func:`check_num_classes`);
* per sample (:func:`check_sample`, run by the preflight on a sample of each split, by
  ``tools/analysis_tools/check_data.py`` on whole splits, and on every sample during training
  and testing through :func:`guard_samples`): an unreadable image or label, a segmentation label
  whose size differs from its image, and label values outside ``[0, num_classes)`` that are not
  the ignore index. Before this, a smaller label trained silently at batch size 1 and failed in
  ``torch.stack`` at 2, and a label of 50 with 20 classes failed in cross-entropy ("Target 50 is
  out of bounds"), neither naming a file.

The label checks apply to mmseg datasets (a ``gt_seg_map`` after ``LoadAnnotations``); for
mmdet and mmpretrain datasets the readable-file and non-empty checks apply.
"""
import os.path as osp
import sys
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.config import Config

__all__ = [
    'DataCheckError', 'DataSampleError', 'check_data', 'check_num_classes',
    'check_sample', 'check_splits', 'guard_samples', 'build_dataset', 'label_settings',
    'preflight_data', 'SegLabelCheck'
]


class DataCheckError(ValueError):
    """The data of a config is unusable as it is; the message says why and what to set."""


class DataSampleError(RuntimeError):
    """A dataset sample failed to load or check; the message names its files."""


def _leaf_dataset_cfgs(ds) -> Iterator[dict]:
    """The file-backed dataset configs inside one dataset config (wrappers unwrapped)."""
    while isinstance(ds, dict) and 'dataset' in ds:  # RepeatDataset and friends
        ds = ds['dataset']
    datasets = ds.get('datasets', [ds]) if isinstance(ds, dict) else []
    yield from (d for d in datasets if isinstance(d, dict))


def _dataset_roots(cfg: Config) -> Iterator[Tuple[str, dict]]:
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if loader:
            for ds in _leaf_dataset_cfgs(loader.get('dataset')):
                yield name, ds


def _check_root(name: str, ds: dict) -> None:
    root = ds.get('data_root')
    if root and not osp.isdir(root):
        is_lip = 'LIP' in f"{ds.get('type')} {root}"
        hint = ('for synthetic LIP-layout data, run `python tools/dataset_converters/'
                'make_demo_lip.py --out data/LIP_demo` and point data_root there (or run '
                '`make demo`)' if is_lip else 'see docs/en/user_guides/data.md')
        raise FileNotFoundError(f'{name}: data_root {root!r} does not exist '
                                f'(dataset {ds.get("type")}). Put the dataset there, point '
                                f'--cfg-options {name}.dataset.data_root=... at it, or {hint}.')


def check_data(cfg: Config, dataloaders=('train_dataloader', 'val_dataloader',
                                         'test_dataloader')) -> None:
    """Raises FileNotFoundError naming a missing data root and how to get data."""
    for name, ds in _dataset_roots(cfg):
        if name in dataloaders:
            _check_root(name, ds)


def _num_classes_of_model(model_cfg) -> dict:
    """num_classes of every head in a model config, by its ``--cfg-options`` path (a list of
    heads, as a cascade's stages or a cascade of decode heads: each one, ``head.0``, ...)."""
    found = {}
    for path in ('decode_head', 'auxiliary_head', 'head', 'bbox_head', 'roi_head.bbox_head',
                 'roi_head.mask_head'):
        node = model_cfg
        for part in path.split('.'):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        heads = ({f'{path}.{i}': n for i, n in enumerate(node)}
                 if isinstance(node, (list, tuple)) else {path: node})
        for where, head in heads.items():
            if isinstance(head, dict) and isinstance(head.get('num_classes'), int):
                found[f'model.{where}.num_classes'] = head['num_classes']
    return found


def check_num_classes(cfg, dataset) -> None:
    """The model's heads must have as many classes as the dataset names.

    A mismatch otherwise shows up as a CUDA/CPU "target out of bounds" deep in the loss, or as
    silently wrong metrics.
    """
    metainfo = getattr(dataset, 'metainfo', None) or {}
    classes = metainfo.get('classes')
    if not classes or 'thing_classes' in metainfo:  # panoptic: things/stuff split across heads
        return
    for where, n in _num_classes_of_model(cfg.model).items():
        if n != len(classes):
            raise ValueError(
                f'{where}={n} but the training dataset ({type(dataset).__name__}) has '
                f'{len(classes)} classes {tuple(classes)[:6]}{"..." if len(classes) > 6 else ""}; '
                f'set {where}={len(classes)} or the dataset metainfo')


def label_settings(cfg: Config) -> Dict[str, int]:
    """The ignore index a segmentation model's losses skip (mmseg's decode-head default 255)."""
    head = (cfg.get('model') or {}).get('decode_head')
    if isinstance(head, (list, tuple)):
        head = head[-1] if head else None
    ignore_index = head.get('ignore_index', 255) if isinstance(head, dict) else 255
    return dict(ignore_index=int(ignore_index))


def _describe(ds_cfg: dict) -> str:
    prefix = ds_cfg.get('data_prefix')
    return (f'{ds_cfg.get("type")}, data_root={ds_cfg.get("data_root")!r}, '
            f'ann_file={ds_cfg.get("ann_file")!r}, data_prefix={dict(prefix or {})}')


def build_dataset(cfg: Config, ds_cfg: dict, split: str = 'dataset'):
    """One dataset config built as the Runner would (``default_scope`` registries), its file
    list loaded; raises FileNotFoundError naming ``split`` for a missing data root (as
    :func:`check_data`, instead of the toolbox's bare ``ann_file`` assertion) and
    :class:`DataCheckError` for an empty split instead of mmengine's ``need at least one array
    to concatenate``."""
    from mmengine.registry import DATASETS, init_default_scope
    for ds in _leaf_dataset_cfgs(ds_cfg):
        _check_root(split, ds)
    init_default_scope(cfg.get('default_scope'))
    # a copy with lazy_init (the registry copies what it pops; nested parts are only read)
    ds_cfg = dict(ds_cfg, lazy_init=True)
    dataset = DATASETS.build(ds_cfg)
    if not hasattr(dataset, 'load_data_list'):
        return dataset
    data_list = dataset.load_data_list()
    if not data_list:
        ann = ds_cfg.get('ann_file')
        raise DataCheckError(
            f'the dataset ({_describe(ds_cfg)}) has no samples: '
            + (f'its id list {ann!r} is empty' if ann else 'no files match its data_prefix') +
            '. Put the sample ids in the ann_file, or fix data_root / ann_file / data_prefix.')
    dataset.load_data_list = lambda: data_list  # full_init below: list the files once
    try:
        dataset.full_init()
    except ValueError as e:
        if 'at least one array' not in str(e):
            raise
        raise DataCheckError(f'the dataset ({_describe(ds_cfg)}) lists {len(data_list)} samples '
                             'but its filter_cfg removes all of them; relax filter_cfg') from None
    return dataset


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def label_file_problem(path: str) -> Optional[str]:
    """What is wrong with the values a label *file* holds before mmseg reads it: its
    ``LoadAnnotations`` casts every label map to 8 bits, so a 16- or 32-bit label holding 261
    would train as class 5. 8-bit PNGs (grey or palette) are read as they are and skipped after
    a look at their header; other files are decoded as they are stored."""
    if not osp.isfile(path):  # remote (s3://...) or missing: reported where it is read
        return None
    with open(path, 'rb') as f:
        head = f.read(26)
    # the IHDR's bit depth (byte 24) of a PNG: 1-8 bits decode to uint8, only 16 can exceed
    if len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[24] != 16:
        return None
    import mmcv
    with open(path, 'rb') as f:
        try:  # as mmseg's LoadAnnotations reads it (imdecode_backend='pillow')
            raw = mmcv.imfrombytes(f.read(), flag='unchanged', backend='pillow')
        except Exception:  # noqa: BLE001 - an unreadable file is reported where it is read
            return None
    low, high = raw.min().item(), raw.max().item()
    if low >= 0 and high <= 255:
        return None
    return (f'{path}: a {raw.dtype.itemsize * 8}-bit label holding values from {low} to {high}; '
            'mmseg reads label maps as 8-bit (LoadAnnotations casts them), so a value above 255 '
            f'would train as another class ({high} as {int(high) % 256}). Store class ids in '
            '[0, 255] (num_classes up to 255 plus the ignore index), or remap the labels')


class SegLabelCheck:
    """A pipeline step after mmseg's ``LoadAnnotations``: the label file's own values must
    survive mmseg's 8-bit cast (:func:`label_file_problem`), and the label map must be one
    channel, have its image's size and hold only ``[0, num_classes)`` and the ignore index
    (after ``reduce_zero_label`` and the dataset's ``label_map``, which ``LoadAnnotations``
    applies). Raises :class:`DataSampleError` naming the files and the settings that fix it."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def problem(self, results: dict) -> Optional[str]:
        label = results.get('gt_seg_map')
        if label is None:
            return None
        path = results.get('seg_map_path')
        seg = path or '(label)'
        in_file = label_file_problem(path) if path else None
        if in_file is not None:
            return in_file
        if label.ndim != 2:
            what = (f'{label.shape[2]} channels (shape {label.shape})' if label.ndim == 3
                    else f'shape {label.shape}')
            return (f'{seg}: the label map has {what}; labels must be one channel of class ids '
                    '(a grey or palette PNG), not a colour image. Convert the colours to class '
                    'ids (one value per class)')
        img_shape = tuple(results.get('ori_shape') or results['img'].shape[:2])
        if label.shape != img_shape:
            return (f'{seg}: the label map is {label.shape[0]}x{label.shape[1]} but its image '
                    f'{results.get("img_path")} is {img_shape[0]}x{img_shape[1]}; every label must '
                    'have its image\'s size. Check that data_root and data_prefix.seg_map_path '
                    'point at the labels of these images, or regenerate the label')
        outside = (label >= self.num_classes) | (label < 0)
        outside &= label != self.ignore_index
        if outside.any():
            values = np.unique(label[outside])
            shown = ', '.join(str(int(v)) for v in values[:8]) + (' ...' if len(values) > 8 else '')
            return (f'{seg}: label values {shown} are outside [0, {self.num_classes}) and are not '
                    f'the ignore index {self.ignore_index} ({int(outside.sum())} pixels). Fix the '
                    'label map, or set num_classes (model.decode_head.num_classes and the '
                    'dataset classes) to cover them, reduce_zero_label=True on the dataset if 0 '
                    'is "other" and the classes start at 1, or model.decode_head.ignore_index '
                    'if a value marks pixels to ignore')
        return None

    def __call__(self, results: dict) -> dict:
        problem = self.problem(results)
        if problem is not None:
            raise DataSampleError(problem)
        return results

    def __repr__(self) -> str:
        return f'SegLabelCheck(num_classes={self.num_classes}, ignore_index={self.ignore_index})'


def _is_seg_annotation_loader(transform) -> bool:
    return (type(transform).__name__ == 'LoadAnnotations'
            and type(transform).__module__.startswith('mmseg.'))


def _leaf_datasets(dataset) -> Iterator[object]:
    stack = [dataset]
    while stack:
        ds = stack.pop()
        for attr in ('dataset', 'datasets'):
            sub = getattr(ds, attr, None)
            if sub is not None:
                stack.extend(sub if isinstance(sub, (list, tuple)) else [sub])
        if hasattr(ds, 'prepare_data'):
            yield ds


def _seg_check_for(dataset, ignore_index: int) -> Optional[SegLabelCheck]:
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms', None) or []
    if classes and any(_is_seg_annotation_loader(t) for t in transforms):
        return SegLabelCheck(len(classes), ignore_index)
    return None


def _sample_files(dataset, idx: int) -> Dict[str, str]:
    try:
        info = dataset.get_data_info(idx)
        return {k: v for k, v in info.items() if k.endswith('path') and v}
    except Exception:  # noqa: BLE001 - only for the message
        return {}


def guard_samples(dataset, ignore_index: int = 255) -> None:
    """Make every sample of a built dataset (and of the datasets it wraps) checked and named.

    Inserts a :class:`SegLabelCheck` after mmseg's ``LoadAnnotations`` in the pipeline, and wraps
    ``prepare_data`` so that any exception is re-raised as :class:`DataSampleError` with the
    sample index and every ``*_path`` of the sample (mmcv's loaders raise without the path, or
    with a bare assertion). Works with dataloader workers (Linux fork).
    """
    for ds in _leaf_datasets(dataset):
        if hasattr(ds, '_vtmm_guarded'):
            continue
        check = _seg_check_for(ds, ignore_index)
        if check is not None:
            transforms = ds.pipeline.transforms
            at = max(i for i, t in enumerate(transforms) if _is_seg_annotation_loader(t))
            transforms.insert(at + 1, check)
        original = ds.prepare_data

        def prepare_data(idx, _ds=ds, _original=original):
            try:
                return _original(idx)
            except DataSampleError as e:
                raise DataSampleError(f'{type(_ds).__name__} sample {idx}: {e}') from None
            except Exception as e:  # noqa: BLE001 - re-raised with context
                raise DataSampleError(
                    f'{type(_ds).__name__} sample {idx} could not be loaded: '
                    f'{type(e).__name__}: {str(e) or "(no message)"}; files: '
                    f'{_sample_files(_ds, idx)}. '
                    'Check or replace the file (a truncated download is the usual cause), or fix '
                    'data_root / data_prefix if they point at the wrong files.') from e

        ds.prepare_data = prepare_data
        ds._vtmm_guarded = True


def _loading_steps(dataset) -> List[Callable]:
    """The pipeline's steps up to its last ``Load*`` transform (reading, no augmentation)."""
    transforms = list(getattr(getattr(dataset, 'pipeline', None), 'transforms', None) or [])
    last = max((i for i, t in enumerate(transforms) if type(t).__name__.startswith('Load')),
               default=-1)
    return transforms[:last + 1]


def check_sample(dataset, idx: int, steps: Sequence[Callable],
                 seg_check: Optional[SegLabelCheck]) -> Optional[str]:
    """Why sample ``idx`` is unusable (its files named), or None."""
    try:
        results = dataset.get_data_info(idx)  # mmengine returns a copy
        for step in steps:
            results = step(results)
            if results is None:
                return f'sample {idx} {_sample_files(dataset, idx)}: a loading step dropped it'
    except Exception as e:  # noqa: BLE001 - reported per sample
        first = str(e).splitlines()[0] if str(e) else '(no message)'
        return (f'sample {idx} {_sample_files(dataset, idx)}: cannot be read ({type(e).__name__}: '
                f'{first}); replace the file, or fix data_root / data_prefix if they point at the '
                'wrong files')
    return seg_check.problem(results) if seg_check is not None else None


def check_splits(cfg: Config, dataloaders: Sequence[str], max_samples: Optional[int] = 16,
                 progress: bool = False) -> Tuple[List[str], int]:
    """Checks the samples of the given splits (every sample with ``max_samples=None``, else that
    many, evenly spaced); returns (problems, samples checked). An empty split is a problem too.
    ``progress`` shows mmengine's progress bar per split."""
    from mmengine.utils import ProgressBar
    ignore_index = label_settings(cfg)['ignore_index']
    problems: List[str] = []
    checked = 0
    for name, ds_cfg in _dataset_roots(cfg):
        if name not in dataloaders:
            continue
        try:
            dataset = build_dataset(cfg, ds_cfg, name)
        except DataCheckError as e:
            problems.append(f'{name}: {e}')
            continue
        n = len(dataset)
        # evenly spaced; every sample where the split has at most max_samples
        indices = (range(n) if max_samples is None else
                   sorted({int(round(i)) for i in np.linspace(0, n - 1, min(max_samples, n))}))
        steps = _loading_steps(dataset)
        seg_check = _seg_check_for(dataset, ignore_index)
        if progress:
            print(f'{name}: {type(dataset).__name__}, {len(indices)} of {n} samples')
        # the stdout of now: mmengine's default is the one of import time
        bar = ProgressBar(len(indices), file=sys.stdout) if progress else None
        for idx in indices:
            problem = check_sample(dataset, idx, steps, seg_check)
            if problem is not None:
                problems.append(f'{name}: {problem}')
            checked += 1
            if bar is not None:
                bar.update()
        if progress:
            print()
    return problems, checked


def preflight_data(cfg: Config, dataloaders: Sequence[str],
                   max_samples: Optional[int] = 16) -> None:
    """Raises :class:`DataCheckError` listing every problem found in a sample of the splits."""
    problems, checked = check_splits(cfg, dataloaders, max_samples)
    if problems:
        scope = 'all samples' if max_samples is None else f'{checked} sampled samples'
        raise DataCheckError(f'{len(problems)} problems in the data ({scope} of '
                             f'{", ".join(dataloaders)} checked):\n  ' + '\n  '.join(problems) +
                             '\n(tools/analysis_tools/check_data.py CONFIG lists every bad sample '
                             'of a split)')
