"""One registration path: mmengine's root registries, visible by plain name from all toolboxes."""
import importlib

import pytest
from mmengine.config import Config


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet', 'mmpretrain'])
def test_hooks_visible_from_each_toolbox(scope):
    import vt_mm  # noqa: F401
    registry = importlib.import_module(f'{scope}.registry').HOOKS
    hook = registry.build(dict(type='NonFiniteLossHook'))
    assert type(hook).__name__ == 'NonFiniteLossHook'


def test_custom_imports_line_registers(tmp_path):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("custom_imports = dict(imports=['vt_mm'], allow_failed_imports=False)\n"
                        "model = dict(type='VTFPN', in_channels=[8, 16], out_channels=8, "
                        "num_outs=2,"
                        " num_tokens=2, token_channels=16)\n")
    cfg = Config.fromfile(str(cfg_file))  # imports vt_mm through custom_imports
    from mmdet.registry import MODELS
    assert type(MODELS.build(cfg.model)).__name__ == 'VTFPN'


def test_lip_configs_load_and_build():
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    for name, neck in (('fpn', 'FPN'), ('vtfpn', 'VTFPN')):
        cfg = Config.fromfile(f'configs/vtfpn/{name}_r50_8xb12-40k_lip-473x473.py')
        assert cfg.model.decode_head.num_classes == 20
        assert cfg.train_dataloader.dataset.type == 'LIPDataset'
        assert cfg.crop_size == (473, 473)
        flips = [t for t in cfg.train_pipeline if 'Flip' in t['type']]
        assert flips and flips[0]['swap_seg_labels'] == [[14, 15], [16, 17], [18, 19]]
        cfg.model.pretrained = None
        cfg.model.backbone.norm_cfg = cfg.model.decode_head.norm_cfg = dict(type='BN')
        model = MODELS.build(cfg.model)
        assert type(model.neck).__name__ == neck
    vt = Config.fromfile('configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py')
    fpn = Config.fromfile('configs/vtfpn/fpn_r50_8xb12-40k_lip-473x473.py')
    # the only difference between the two configs is the neck
    vt_d, fpn_d = vt.to_dict(), fpn.to_dict()
    vt_d['model'].pop('neck'), fpn_d['model'].pop('neck')
    assert vt_d == fpn_d
