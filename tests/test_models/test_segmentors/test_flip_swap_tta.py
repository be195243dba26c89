"""FlipSwapSegTTAModel: left stays left under flip test-time augmentation."""

import pytest
import torch
from helpers import VTFPN_LIP

from vt_mm.datasets.transforms import swap_label_lut


def test_flip_swap_tta_swaps_horizontal_flips_only():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from vt_mm.models.segmentors.flip_swap_tta import FlipSwapSegTTAModel

    class Identity(torch.nn.Module):
        pass

    def sample(flip, direction, values):
        meta = dict(flip=flip, img_path='x.jpg')
        if direction is not None:
            meta['flip_direction'] = direction
        s = SegDataSample(metainfo=meta)
        s.seg_logits = PixelData(data=torch.tensor(values, dtype=torch.float32).view(-1, 1, 1))
        return s

    tta = FlipSwapSegTTAModel.__new__(FlipSwapSegTTAModel)
    torch.nn.Module.__init__(tta)
    tta.swap_pairs, tta._lut = [[1, 2]], swap_label_lut([[1, 2]])
    merged = []
    import mmseg.models.segmentors.seg_tta as seg_tta
    original = seg_tta.SegTTAModel.merge_preds
    seg_tta.SegTTAModel.merge_preds = lambda self, lists: merged.append(lists) or lists
    try:
        views = [[sample(False, None, [0, 1, 2]), sample(True, 'horizontal', [0, 1, 2]),
                  sample(True, None, [0, 1, 2]), sample(True, 'vertical', [0, 1, 2])]]
        tta.merge_preds(views)
        got = [s.seg_logits.data.view(-1).tolist() for s in merged[0][0]]
        assert got == [[0, 1, 2], [0, 2, 1], [0, 2, 1], [0, 1, 2]]
        with pytest.raises(ValueError, match=r"swap_pairs \[\[1, 2\]\] name classes beyond the "
                           r"model's 2 output channels"):
            tta.merge_preds([[sample(True, 'horizontal', [0, 1])]])
        tta.merge_preds([[sample(True, 'horizontal', [0, 1, 2, 3])]])
        assert merged[-1][0][0].seg_logits.data.view(-1).tolist() == [0, 2, 1, 3]
    finally:
        seg_tta.SegTTAModel.merge_preds = original


def test_flip_swap_tta_builds_from_a_config_and_keeps_unflipped_views():
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    module = dict(type='EncoderDecoder', data_preprocessor=dict(type='SegDataPreProcessor'),
                  backbone=dict(type='VTResNet', depth=18, out_indices=(3, )),
                  decode_head=dict(type='FCNHead', in_channels=256, channels=8, num_convs=1,
                                   num_classes=4, in_index=0))
    # SegTTAModel's own arguments are passed on: its data_preprocessor replaces the module's
    preprocessor = dict(type='SegDataPreProcessor', mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0])
    tta = MODELS.build(dict(type='FlipSwapSegTTAModel', module=module, swap_pairs=[(1, 2)],
                            data_preprocessor=preprocessor))
    assert tta.swap_pairs == [[1, 2]] and list(tta._lut[:4]) == [0, 2, 1, 3]
    assert tta.module.data_preprocessor.mean.flatten().tolist() == [1.0, 2.0, 3.0]
    views = []
    for meta in (dict(), dict(flip=False), dict(flip=True, flip_direction='vertical'),
                 dict(flip=True, flip_direction='horizontal')):
        sample = SegDataSample(metainfo=dict(meta, img_path='x.jpg'))
        logits = torch.zeros(4, 1, 1)
        logits[1] = 1.0  # class 1 in every view
        sample.seg_logits = PixelData(data=logits)
        views.append(sample)
    merged = []
    import mmseg.models.segmentors.seg_tta as seg_tta
    original = seg_tta.SegTTAModel.merge_preds
    seg_tta.SegTTAModel.merge_preds = lambda self, lists: merged.append(lists) or lists
    try:
        tta.merge_preds([views])
    finally:
        seg_tta.SegTTAModel.merge_preds = original
    # no flip key, no flip, a vertical flip: unchanged; the horizontal one after them: swapped
    assert [int(s.seg_logits.data.argmax()) for s in merged[0][0]] == [1, 1, 1, 2]


def test_flip_tta_keeps_left_arm_left():
    """Original view: weakly left arm; flipped view (already flipped back spatially): strongly
    'right arm', because in the mirrored image that arm is a right arm. Swapping the flipped
    view's channels gives left arm; plain averaging (mmseg SegTTAModel) would give right arm."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    cfg = Config.fromfile(VTFPN_LIP)
    assert cfg.tta_model.type == 'FlipSwapSegTTAModel'
    assert cfg.tta_model.swap_pairs == [[14, 15], [16, 17], [18, 19]]
    cfg.model.pretrained = None
    cfg.model.backbone.norm_cfg = cfg.model.decode_head.norm_cfg = dict(type='BN')

    def views():
        out = []
        for flip, left, right in ((False, 1.0, 0.5), (True, 0.0, 3.0)):
            logits = torch.zeros(20, 2, 2)
            logits[14], logits[15] = left, right
            sample = SegDataSample(metainfo=dict(flip=flip, flip_direction='horizontal',
                                                 img_path='x.jpg'))
            sample.seg_logits = PixelData(data=logits)
            out.append(sample)
        return [out]

    tta = MODELS.build(dict(cfg.tta_model, module=cfg.model))
    pred = tta.merge_preds(views())[0].pred_sem_seg.data
    assert (pred == 14).all()
    plain = MODELS.build(dict(type='SegTTAModel', module=cfg.model))
    assert (plain.merge_preds(views())[0].pred_sem_seg.data == 15).all()
