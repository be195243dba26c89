"""What a deployed segmentor scores on its validation split, next to mmseg's own prediction.

mmseg predicts by resizing the logits bilinearly to the input, then to the image
(``decode_head.predict_by_feat`` + ``postprocess_result``), then argmax. The deployed graphs
either output the 1/8 logits (post-processed here by that same mmseg code, so that only the
runtime and its precision differ) or end in labels (argmax at the logits' resolution, nearest
upsample: :class:`~vt_mm.deploy.onnx.SegmentationLabels`), which are resized nearest to the
image's size. Each is scored by mmseg's ``IoUMetric`` arithmetic and compared pixel by pixel
with mmseg's prediction.
"""
import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['ValSample', 'val_samples', 'mmseg_labels', 'label_map_to', 'MIoU', 'Scored',
           'score']


@dataclass
class ValSample:
    """One validation image: the graph's input, its ground truth and mmseg's prediction (both at
    the image's original size)."""
    inputs: np.ndarray  # (1, 3, H, W) normalised float32
    data_samples: list  # mmseg SegDataSamples with the image's metainfo
    gt: np.ndarray  # (h, w) int64
    mmseg_pred: np.ndarray  # (h, w) int64, mmseg's EncoderDecoder.predict


def val_samples(cfg, model, max_images: Optional[int] = None,
                split: str = 'val_dataloader') -> List[ValSample]:
    """The split's images through its pipeline and the model's data_preprocessor, with mmseg's
    prediction of the eval-mode ``model`` for each."""
    from .calibration import preprocessed_split
    samples = []
    model.eval()
    _, batches = preprocessed_split(cfg, model, max_images, split)
    with torch.no_grad():
        for batch in batches:
            data_samples = batch['data_samples']
            pred = model.predict(batch['inputs'], copy.deepcopy(data_samples))[0]
            samples.append(ValSample(
                inputs=np.ascontiguousarray(batch['inputs'].float().numpy()),
                data_samples=data_samples,
                gt=data_samples[0].gt_sem_seg.data[0].numpy().astype(np.int64),
                mmseg_pred=pred.pred_sem_seg.data[0].numpy().astype(np.int64)))
    return samples


def mmseg_labels(model, logits: np.ndarray, sample: ValSample) -> np.ndarray:
    """mmseg's prediction from (a backend's) 1/8 logits: the decode head's bilinear resize to
    the input, ``postprocess_result``'s to the image, argmax (mmseg's own code)."""
    data_samples = copy.deepcopy(sample.data_samples)
    metas = [s.metainfo for s in data_samples]
    with torch.no_grad():
        seg = model.decode_head.predict_by_feat(torch.from_numpy(np.asarray(logits)), metas)
        pred = model.postprocess_result(seg, data_samples)[0]
    return pred.pred_sem_seg.data[0].numpy().astype(np.int64)


def label_map_to(labels: np.ndarray, shape) -> np.ndarray:
    """A (1, 1, H, W) label map resized nearest to the image's ``shape`` (h, w)."""
    labels = torch.from_numpy(np.asarray(labels).reshape(1, 1, *np.shape(labels)[-2:]))
    if tuple(labels.shape[-2:]) != tuple(shape):
        labels = F.interpolate(labels.float(), size=tuple(shape), mode='nearest')
    return labels[0, 0].numpy().astype(np.int64)


class MIoU:
    """Accumulates mmseg's IoUMetric areas over images."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.areas = None

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        from mmseg.evaluation.metrics import IoUMetric
        if pred.shape != gt.shape:
            raise ValueError(f'prediction {pred.shape} and label map {gt.shape} differ in size')
        areas = IoUMetric.intersect_and_union(torch.from_numpy(pred), torch.from_numpy(gt),
                                              self.num_classes, self.ignore_index)
        self.areas = areas if self.areas is None else [a + b for a, b in zip(self.areas, areas)]

    def value(self) -> float:
        """mIoU in % (classes absent from both prediction and labels do not count)."""
        from mmseg.evaluation.metrics import IoUMetric
        with np.errstate(invalid='ignore', divide='ignore'):  # absent classes: nan
            metrics = IoUMetric.total_area_to_metrics(*self.areas, ['mIoU'])
        return 100 * float(np.nanmean(metrics['IoU']))


@dataclass
class Scored:
    miou: float  # %
    agreement: float  # % of pixels equal to mmseg's prediction


def score(predict: Callable[[ValSample], np.ndarray], samples: List[ValSample],
          num_classes: int, ignore_index: int = 255) -> Scored:
    """mIoU and agreement with mmseg of ``predict`` (sample -> (h, w) labels at the image's
    size) over ``samples``."""
    miou = MIoU(num_classes, ignore_index)
    equal = total = 0
    for sample in samples:
        pred = predict(sample)
        miou.add(pred, sample.gt)
        equal += int((pred == sample.mmseg_pred).sum())
        total += pred.size
    return Scored(miou.value(), 100 * equal / total)


def predictors(model, runners: Dict[str, Callable], outputs: Dict[str, str]):
    """sample -> labels for each runner (input -> outputs list): ``outputs[name]`` says whether
    it gives 'logits' (post-processed by mmseg) or 'labels' (resized nearest)."""
    result = {}
    for name, run in runners.items():
        if outputs[name] == 'logits':
            result[name] = (lambda s, run=run: mmseg_labels(model, run(s.inputs)[0], s))
        else:
            result[name] = (lambda s, run=run: label_map_to(run(s.inputs)[0], s.gt.shape))
    return result
