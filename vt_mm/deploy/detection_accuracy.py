"""What a deployed detector scores on its validation split, through mmdet's own evaluator
(the config's ``test_evaluator``: CocoMetric box and mask AP), next to mmdet's own prediction of
the same checkpoint (what ``tools/test.py`` scores).

The detections graph (:mod:`vt_mm.deploy.detection`) gives boxes in its input pixels and, for
Mask R-CNN, masks at the box; :func:`instances` does what mmdet's ``rescale=True`` does after
its head: boxes clipped to the resized image (the graph clips to its input, which may include
the batch padding), divided by the resize factor, masks pasted into the original image.
"""
import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .detection import detections_of, match_detections, paste_masks

__all__ = ['DetSample', 'val_samples', 'instances', 'evaluate', 'equal_to_mmdet']


@dataclass
class DetSample:
    """One validation image: the graph's input, its metadata and mmdet's prediction."""
    inputs: np.ndarray  # (1, 3, H, W) normalised float32, padded as mmdet pads it
    data_sample: object  # mmdet DetDataSample with the image's metainfo (and ground truth)
    mmdet_pred: object  # mmdet's pred_instances (rescale=True)


def val_samples(cfg, model, max_images: Optional[int] = None,
                split: str = 'test_dataloader') -> Tuple[List[DetSample], dict]:
    """The split's images through its pipeline and the model's data_preprocessor, with mmdet's
    prediction of the eval-mode ``model`` for each; and the dataset's metainfo (what the
    evaluator is given)."""
    from .calibration import preprocessed_split
    samples = []
    model.eval()
    dataset, batches = preprocessed_split(cfg, model, max_images, split)
    with torch.no_grad():
        for batch in batches:
            data_sample = batch['data_samples'][0]
            pred = model.predict(batch['inputs'], [copy.deepcopy(data_sample)], rescale=True)[0]
            samples.append(DetSample(np.ascontiguousarray(batch['inputs'].float().numpy()),
                                     data_sample, pred.pred_instances))
    return samples, dataset.metainfo


def instances(outputs: Sequence, data_sample, mask_threshold: float = 0.5):
    """mmdet ``InstanceData`` (boxes, scores, labels[, masks]) in the original image of a
    detections graph's outputs for ``data_sample``'s image: mmdet's ``rescale=True``."""
    from mmengine.structures import InstanceData
    found = detections_of(outputs)
    boxes = found[0].clone().float()
    height, width = data_sample.img_shape[:2]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    boxes = boxes / boxes.new_tensor(data_sample.scale_factor).repeat(2)
    result = InstanceData(bboxes=boxes, scores=found[1].float(), labels=found[2])
    if len(found) > 3:
        result.masks = paste_masks(found[3], boxes, data_sample.ori_shape[:2], mask_threshold)
    return result


def evaluate(cfg, dataset_meta: dict, samples: List[DetSample],
             predict: Callable[[DetSample], object]) -> Dict[str, float]:
    """The config's ``test_evaluator`` (mmdet's metrics) on ``predict(sample)`` -> mmdet
    ``InstanceData`` for every sample."""
    from mmdet.registry import METRICS
    from mmengine.evaluator import Evaluator
    configs = cfg.test_evaluator
    configs = copy.deepcopy(configs if isinstance(configs, (list, tuple)) else [configs])
    evaluator = Evaluator([METRICS.build(c) for c in configs])
    evaluator.dataset_meta = dataset_meta
    for sample in samples:
        data_sample = sample.data_sample.clone()
        data_sample.pred_instances = predict(sample)
        evaluator.process([data_sample])
    return evaluator.evaluate(len(samples))


def equal_to_mmdet(predicted, sample: DetSample) -> bool:
    """Whether ``predicted`` (InstanceData in the original image) is mmdet's prediction of the
    image: :func:`~vt_mm.deploy.detection.match_detections`, masks included."""
    def fields(instances):
        found = (instances.bboxes, instances.scores, instances.labels)
        return found + ((instances.masks, ) if 'masks' in instances else ())
    return match_detections(fields(predicted), fields(sample.mmdet_pred))[0]
