"""INT8 calibration inputs from a config's own data: the test split's images through the test
pipeline and the model's data_preprocessor (mean/std, RGB), resized to the graph's static size."""
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['calibration_images']


def calibration_images(cfg, model, shape: Tuple[int, int], num: int,
                       split: str = 'test_dataloader') -> List[np.ndarray]:
    """The first ``num`` images of ``cfg[split]``'s dataset as normalised float32 arrays
    (1, 3, H, W), as the exported graph takes them; a clear error if the split has fewer."""
    from vt_mm.engine.data_checks import build_dataset
    if num < 1:
        raise ValueError(f'--calib-images must be >= 1, got {num}')
    dataset = build_dataset(cfg, cfg[split]['dataset'])
    if len(dataset) < num:
        raise ValueError(f'{num} calibration images asked for, but the {split} split has '
                         f'{len(dataset)}; lower --calib-images or point data_root at more data')
    images = []
    with torch.no_grad():
        for idx in range(num):
            sample = dataset[idx]
            batch = model.data_preprocessor(
                dict(inputs=[sample['inputs']], data_samples=[sample['data_samples']]), False)
            x = batch['inputs'].float()
            if tuple(x.shape[-2:]) != tuple(shape):
                x = F.interpolate(x, size=shape, mode='bilinear', align_corners=False)
            images.append(np.ascontiguousarray(x.numpy(), dtype=np.float32))
    return images
