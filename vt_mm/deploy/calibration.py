"""INT8 calibration inputs from a config's own data: images of its training split through the
test pipeline and the model's data_preprocessor (mean/std, RGB), resized to the graph's static
size. The training split, so that an INT8 model evaluated on the validation split was not
calibrated on the images it is scored on."""
import copy
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['calibration_images', 'preprocessed']


def preprocessed(model, sample: dict) -> dict:
    """One dataset sample as the model sees it: its data_preprocessor's batch of one
    (``inputs`` normalised, ``data_samples`` with the metainfo)."""
    from mmengine.dataset import pseudo_collate
    return model.data_preprocessor(pseudo_collate([sample]), False)


def preprocessed_split(cfg, model, max_images: Optional[int] = None,
                       split: str = 'val_dataloader') -> Tuple[object, Iterator[dict]]:
    """``cfg[split]``'s dataset and its first ``max_images`` samples (all by default), each as
    :func:`preprocessed` gives it; the accuracy tools' input."""
    from vt_mm.engine.data_checks import build_dataset
    dataset = build_dataset(cfg, cfg[split]['dataset'], split)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    return dataset, (preprocessed(model, dataset[idx]) for idx in range(count))


def calibration_images(cfg, model, shape: Tuple[int, int], num: int,
                       split: str = 'train_dataloader') -> List[np.ndarray]:
    """``num`` images of ``cfg[split]``'s dataset (evenly spread over it), loaded by the test
    pipeline, as normalised float32 arrays (1, 3, H, W) as the exported graph takes them; a
    clear error if the split has fewer or its data is missing."""
    from vt_mm.engine.data_checks import build_dataset
    if num < 1:
        raise ValueError(f'--calib-images must be >= 1, got {num}')
    ds_cfg = copy.deepcopy(cfg[split]['dataset'])
    ds_cfg['pipeline'] = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)  # no augmentation
    dataset = build_dataset(cfg, ds_cfg, split)
    if len(dataset) < num:
        raise ValueError(f'{num} calibration images asked for, but the {split} split has '
                         f'{len(dataset)}; lower --calib-images or point data_root at more data')
    images = []
    with torch.no_grad():
        for idx in np.linspace(0, len(dataset) - 1, num).round().astype(int):
            x = preprocessed(model, dataset[int(idx)])['inputs'].float()
            if tuple(x.shape[-2:]) != tuple(shape):
                x = F.interpolate(x, size=shape, mode='bilinear', align_corners=False)
            images.append(np.ascontiguousarray(x.numpy(), dtype=np.float32))
    return images
