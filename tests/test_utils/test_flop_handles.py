"""After ``import vt_mm``, mmengine's own FLOP counter (``get_model_complexity_info``, what the
toolboxes' ``get_flops.py`` call) counts the fused attention and ``baddbmm`` products of vt-mm's
models, as vt-mm's own counter does."""
import pytest
import torch
from mmengine.analysis import FlopAnalyzer, complexity_analysis, get_model_complexity_info

import vt_mm  # noqa: F401  (registers the handles)
from vt_mm.analysis import ImageToOutputs, build_model, flop_analyzer
from vt_mm.utils import flop_handles

# family: (config, input size, whether it uses the operators mmengine skips)
FAMILIES = {
    'VT-FPN': ('vt_mm::vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py', (96, 96), True),
    'SeaFormer-T': ('vt_mm::seaformer/seaformer-tiny_8xb4-160k_ade20k-512x512.py', (64, 64), False),
    'PyramidTNT-Ti': ('vt_mm::pyramid_tnt/pyramid-tnt-ti_8xb128_in1k.py', (192, 192), True),
    'VT-ResNet-18': ('vt_mm::vt_resnet/vt-resnet18_8xb32_in1k.py', (64, 64), True),
}


def test_import_vt_mm_puts_the_handles_in_mmengines_defaults():
    table = complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS
    for name, handle in flop_handles.FLOP_HANDLES.items():
        assert table[name] is handle, name
    assert flop_handles.register_flop_handles()  # again: nothing changes, still True
    assert table['aten::addmm'] is not flop_handles.baddbmm_flop_jit  # mmengine's own kept


@pytest.mark.parametrize('family', FAMILIES)
def test_mmengines_own_counter_counts_what_vt_mm_counts(family, monkeypatch):
    config, shape, skipped_before = FAMILIES[family]
    model, _, toolbox = build_model(config)
    net = ImageToOutputs(model, toolbox).eval()
    x = torch.randn(1, 3, *shape)
    with torch.no_grad():
        ours = flop_analyzer(net, (x, )).total()
        stock = get_model_complexity_info(net, inputs=(x, ), show_table=False,
                                          show_arch=False)['flops']
        for name in flop_handles.FLOP_HANDLES:  # mmengine's table as it ships
            monkeypatch.delitem(complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS, name)
        without = FlopAnalyzer(net, (x, )).total()
    assert stock == ours, (family, stock, ours)
    if skipped_before:  # what mmengine counted without them: token products, attention missing
        assert without < 0.98 * ours, (family, without, ours)
    else:
        assert without == ours, (family, without, ours)


@pytest.mark.slow  # a tool or a user's program in a process of its own
def test_mmdets_own_get_flops_counts_retinanet_with_vtfpn_as_vt_mm_does(tmp_path):
    """mmdet's own tools/analysis_tools/get_flops.py (shipped in mmdet's wheel) on vt-mm's
    RetinaNet + VT-FPN config: the config's custom_imports load vt_mm, and the printed FLOPs
    agree with vt-mm's counter on the same input within 2% (mmdet rounds to 3 digits)."""
    import os
    import os.path as osp
    import re
    import subprocess
    import sys

    import mmdet

    from vt_mm.analysis import resolve_config_path
    from vt_mm.datasets.demo_shapes import make_demo_coco
    paths = make_demo_coco(str(tmp_path / 'coco'), 'val', num_images=1, size=(160, 128))
    config = resolve_config_path('vt_mm::vtfpn/retinanet_r50_vtfpn_1x_coco.py')
    tool = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'analysis_tools',
                    'get_flops.py')
    proc = subprocess.run(
        [sys.executable, tool, config, '--num-images', '1', '--cfg-options',
         f'val_dataloader.dataset.data_root={tmp_path / "coco"}/',
         f'val_dataloader.dataset.ann_file={paths["ann_file"]}',
         f'val_dataloader.dataset.data_prefix.img={paths["img_dir"]}/',
         'val_dataloader.dataset.pipeline.1.scale=(160,128)', 'val_dataloader.num_workers=0',
         'val_dataloader.persistent_workers=False'],
        capture_output=True, text=True, timeout=900, env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    shape = tuple(map(int, re.search(r'Input shape: \((\d+), (\d+)\)', proc.stdout).groups()))
    value, unit = re.search(r'Flops: ([\d.]+)([KMGT]?)', proc.stdout).groups()
    printed = float(value) * {'': 1, 'K': 1e3, 'M': 1e6, 'G': 1e9, 'T': 1e12}[unit]
    model, _, toolbox = build_model(config)
    with torch.no_grad():
        ours = flop_analyzer(ImageToOutputs(model, toolbox).eval(),
                             (torch.randn(1, 3, *shape), )).total()
    assert abs(printed / ours - 1) < 0.02, (printed, ours, shape)


class _Attention(torch.nn.Module):

    def forward(self, q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize('q, k, v', [
    ((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 4)),  # 4-D: batch, heads, queries / keys, width
    ((6, 5, 8), (6, 7, 8), (6, 7, 4)),  # 3-D
])
def test_attention_counts_both_products(q, k, v):
    """q @ k^T (Nq x d x Nk) and attn @ v (Nq x Nk x dv) per batch and head: 6 x 5 x 7 x 12."""
    inputs = tuple(torch.randn(*s) for s in (q, k, v))
    with torch.no_grad():
        assert FlopAnalyzer(_Attention(), inputs).total() == 6 * 5 * 7 * (8 + 4)


def test_baddbmm_counts_the_product_only():
    class Baddbmm(torch.nn.Module):
        def forward(self, c, a, b):
            return torch.baddbmm(c, a, b)
    inputs = (torch.randn(3, 5, 4), torch.randn(3, 5, 7), torch.randn(3, 7, 4))
    with torch.no_grad():
        assert FlopAnalyzer(Baddbmm(), inputs).total() == 3 * 5 * 7 * 4


def test_registration_adds_missing_handles_and_keeps_existing_ones(monkeypatch):
    sentinel = object()
    table = {'aten::baddbmm': sentinel}
    monkeypatch.setattr(complexity_analysis, '_DEFAULT_SUPPORTED_FLOP_OPS', table)
    assert flop_handles.register_flop_handles() is True
    assert table == {'aten::baddbmm': sentinel,
                     'aten::scaled_dot_product_attention': flop_handles.sdpa_flop_jit,
                     'aten::baddbmm_': flop_handles.baddbmm_flop_jit}
    monkeypatch.delattr(complexity_analysis, '_DEFAULT_SUPPORTED_FLOP_OPS')
    assert flop_handles.register_flop_handles() is False  # an mmengine without the table
