"""Building models for analysis (vt_mm/analysis/building.py): nothing downloaded, default input
sizes, trained-like BatchNorm."""
import logging
import os.path as osp

import pytest
import torch
import torch.nn as nn
from helpers import VTFPN_LIP
from mmengine.config import Config

from vt_mm import analysis


def test_resolve_config_path():
    import mmseg
    assert analysis.resolve_config_path('configs/x.py') == 'configs/x.py'
    assert analysis.resolve_config_path('mmseg::fpn/a.py') == osp.join(
        osp.dirname(mmseg.__file__), '.mim', 'configs', 'fpn/a.py')
    from vt_mm.utils.config_scope import configs_root
    assert analysis.resolve_config_path('vt_mm::demo/odd::name.py') == osp.join(  # first :: only
        configs_root(), 'demo/odd::name.py')


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
    cfg.write_text(f"_base_ = [{VTFPN_LIP!r}]\n"
                   "model = dict(backbone=dict(depth=18, init_cfg=dict(type='Pretrained', "
                   "checkpoint='open-mmlab://nowhere')), neck=dict(in_channels=[64, 128, 256, "
                   "512], token_channels=64), decode_head=dict(init_cfg=dict(type='Normal', "
                   "std=0.01, layer='Conv2d')))\n")
    model, built_cfg, toolbox = analysis.build_model(str(cfg))
    # only Pretrained initialisations are dropped
    assert built_cfg.model.decode_head.init_cfg == dict(type='Normal', std=0.01, layer='Conv2d')
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


def test_trained_like_bn_draws_the_same_statistics_whatever_the_global_seed():
    """Its own generator, seeded: benchmark weights are the same in every run and process."""
    import torch
    import torch.nn as nn

    from vt_mm.analysis import trained_like_bn
    drawn = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
        trained_like_bn(net)
        bn = net[1]
        drawn.append((bn.running_mean.clone(), bn.running_var.clone(), bn.bias.clone()))
    for a, b in zip(*drawn):
        assert torch.equal(a, b)
    mean, var, bias = drawn[0]
    assert mean.abs().max() <= 0.1 and 0.8 <= var.min() and var.max() <= 1.2
    assert bias.abs().max() <= 0.1 and len(set(mean.tolist())) == 8


def test_build_model_holds_the_initialisation_log_back_unless_verbose(monkeypatch):
    from mmengine.logging import MMLogger

    from vt_mm.analysis import building
    logger = MMLogger.get_current_instance()
    logger.setLevel(logging.INFO)
    levels = []
    monkeypatch.setattr(building, '_build_model', lambda config: levels.append(logger.level))
    building.build_model('c.py')
    building.build_model('c.py', verbose=True)
    assert levels == [logging.WARNING, logging.INFO] and logger.level == logging.INFO
