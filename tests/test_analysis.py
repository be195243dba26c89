"""vt_mm/analysis.py: the model builder, default input sizes, FLOP handles, benchmark weights
and the alternating timer, at their boundaries."""
import logging
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

import vt_mm  # noqa: F401
from vt_mm import analysis

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_resolve_config_path():
    import mmseg
    assert analysis.resolve_config_path('configs/x.py') == 'configs/x.py'
    assert analysis.resolve_config_path('mmseg::fpn/a.py') == osp.join(
        osp.dirname(mmseg.__file__), '.mim', 'configs', 'fpn/a.py')


def test_quiet_logs_restore_the_level():
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    logger.setLevel(logging.INFO)
    with analysis.quiet_mmengine_logs():
        assert logger.level == logging.WARNING
    assert logger.level == logging.INFO
    with analysis.quiet_mmengine_logs(verbose=True):
        assert logger.level == logging.INFO
    with pytest.raises(KeyError), analysis.quiet_mmengine_logs():
        raise KeyError
    assert logger.level == logging.INFO


def test_build_model_downloads_nothing_and_is_in_eval_mode(tmp_path):
    cfg = tmp_path / 'c.py'
    cfg.write_text(f"_base_ = [{osp.join(ROOT, 'configs', 'vtfpn_lip.py')!r}]\n"
                   "model = dict(backbone=dict(depth=18, init_cfg=dict(type='Pretrained', "
                   "checkpoint='open-mmlab://nowhere')), neck=dict(in_channels=[64, 128, 256, "
                   "512], token_channels=64))\n")
    model, built_cfg, toolbox = analysis.build_model(str(cfg))
    assert toolbox == 'mmseg' and not model.training
    assert built_cfg.model.pretrained is None and built_cfg.model.backbone.init_cfg is None
    assert built_cfg.model.backbone.norm_cfg.type == 'BN'  # SyncBN in the paper config
    assert not any('SyncBatchNorm' in type(m).__name__ for m in model.modules())


@pytest.mark.parametrize('cfg,toolbox,shape', [
    (dict(crop_size=(473, 473)), 'mmseg', (473, 473)),
    (dict(crop_size=[512, 1024]), 'mmseg', (512, 1024)),
    (dict(), 'mmseg', (512, 512)),
    (dict(), 'mmdet', (800, 1333)),
    (dict(test_pipeline=[dict(type='Resize'), dict(type='CenterCrop', crop_size=192)]),
     'mmpretrain', (192, 192)),
    (dict(test_pipeline=[dict(type='CenterCrop', crop_size=(224, 160))]), 'mmpretrain',
     (160, 224)),
    (dict(test_pipeline=None, test_dataloader=dict(dataset=dict(pipeline=[
        dict(type='CenterCrop', crop_size=256)]))), 'mmpretrain', (256, 256)),
    (dict(test_dataloader=dict(dataset=dict())), 'mmpretrain', (224, 224))])
def test_default_shape(cfg, toolbox, shape):
    assert analysis.default_shape(Config(cfg), toolbox) == shape


def test_toolbox_of_model():
    from mmpretrain.models import ImageClassifier
    classifier = ImageClassifier.__new__(ImageClassifier)  # the class is what counts
    assert analysis.toolbox_of_model(classifier) == 'mmpretrain'
    with pytest.raises(TypeError, match=r"^Linear is not an mmseg, mmdet or mmpretrain model; "
                       r"pass toolbox='mmseg' \| 'mmdet' \| 'mmpretrain'$"):
        analysis.toolbox_of_model(nn.Linear(1, 1))


def test_image_to_outputs_follows_the_models_mode():
    model = nn.Linear(2, 2)
    assert analysis.ImageToOutputs(model.eval(), 'mmseg').training is False
    assert analysis.ImageToOutputs(model.train(), 'mmseg').training is True


def test_trained_like_bn():
    bn = nn.BatchNorm2d(1000)
    nn.init.zeros_(bn.weight[:500])
    model = analysis.trained_like_bn(nn.Sequential(bn))
    weight, bias = bn.weight.detach(), bn.bias.detach()
    small, gain = weight[:500], weight[500:]
    assert small.min() >= 0.05 and small.max() <= 0.15
    assert gain.min() >= 0.8 and gain.max() <= 1.2 and gain.min() < 0.85 and gain.max() > 1.15
    assert bias.abs().max() <= 0.1 and bias.abs().max() > 0.09
    assert bn.running_mean.abs().max() <= 0.1 and bn.running_mean.abs().max() > 0.09
    assert bn.running_var.min() >= 0.8 and bn.running_var.max() <= 1.2
    assert model[0] is bn
    again = nn.BatchNorm2d(1000)
    nn.init.zeros_(again.weight[:500])
    analysis.trained_like_bn(nn.Sequential(again))
    assert torch.equal(again.weight, bn.weight)  # seeded
    plain = nn.BatchNorm2d(4)
    analysis.trained_like_bn(nn.Sequential(plain), affine=False)
    assert torch.equal(plain.weight, torch.ones(4)) and torch.equal(plain.bias, torch.zeros(4))
    assert not torch.equal(plain.running_var, torch.ones(4))


def test_flop_handles_count_multiply_adds():

    class Attention(nn.Module):

        def forward(self, q):
            k = torch.ones(2, 3, 7, 4)
            v = torch.ones(2, 3, 7, 6)
            return nn.functional.scaled_dot_product_attention(q, k, v)

    q = torch.ones(2, 3, 5, 4)
    total, skipped = analysis.count_flops(Attention(), q)
    assert total == 2 * 3 * 5 * 7 * (4 + 6) and skipped == []

    class Products(nn.Module):

        def forward(self, a):
            b = torch.ones(2, 3, 4)
            return torch.baddbmm(torch.zeros(2, 5, 4), a, b)

    total, _ = analysis.count_flops(Products(), torch.ones(2, 5, 3))
    assert total == 2 * 5 * 3 * 4


def test_batch_norm_is_counted_only_when_asked():
    net = nn.Sequential(nn.Conv2d(2, 4, 1, bias=False), nn.BatchNorm2d(4)).eval()
    x = torch.ones(1, 2, 3, 3)
    without, _ = analysis.count_flops(net, x)
    with_bn, _ = analysis.count_flops(net, x, count_bn=True)
    assert without == 2 * 4 * 9 and with_bn > without


def test_time_alternately_runs_warmup_then_alternates(monkeypatch):
    calls = []
    fns = [lambda: calls.append('a'), lambda: calls.append('b')]
    rows = analysis.time_alternately(fns, runs=3, warmup=1, device='cpu', settle_s=0.0)
    assert calls == ['a', 'b'] * 4 and len(rows) == 2
    assert all(lo <= med <= hi for med, lo, hi in rows)
    grads = []
    analysis.time_alternately([lambda: grads.append(torch.is_grad_enabled())], runs=1,
                              warmup=0, device='cpu')
    analysis.time_alternately([lambda: grads.append(torch.is_grad_enabled())], runs=1,
                              warmup=0, device='cpu', grad=True)
    assert grads == [False, True]
