"""SeaFormer: exact official parameter counts, FLOPs, any input size, converters, deploy, ONNX."""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT
from helpers.converters import assert_values_moved_one_to_one
from mmengine.config import Config
from mmengine.registry import init_default_scope

from vt_mm.analysis import ImageToOutputs, flop_analyzer
from vt_mm.deploy import switch_to_deploy
from vt_mm.engine.distributed import replace_syncbn
from vt_mm.models.backbones import SeaFormer
from vt_mm.models.backbones.seaformer import checkpoint_filter_fn, convert_head_keys

OFFICIAL = json.load(open(osp.join(ROOT, 'tests/data/seaformer_official_state_dicts.json')))


ARCHS = ['tiny', 'small', 'base', 'large']


SEG_PARAMS = dict(tiny=1667318, small=3990118, base=8605654, large=13951510)


CLS_PARAMS = dict(tiny=1781096, small=4105656, base=8742664, large=14046504)


GMACS = dict(tiny=0.563, small=1.031, base=1.758, large=6.340)


SEG_LAYOUT = dict(tiny='seaformer_tiny_ade20k_seg', small='seaformer_small_ade20k_seg',
                  base='seaformer_base_ade20k_seg', large='seaformer_large_ade20k_seg')


CLS_LAYOUT = dict(tiny='SeaFormer_T_in1k_cls', small='SeaFormer_S_in1k_cls',
                  base='SeaFormer_B_in1k_cls', large='SeaFormer_L_in1k_cls')


def build_segmentor(arch, config=None):
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile(config
                          or f'configs/seaformer/seaformer-{arch}_8xb4-160k_ade20k-512x512.py')
    replace_syncbn(cfg)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def build_classifier(arch):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(f'configs/seaformer/seaformer-{arch}_8xb128_in1k.py')
    return MODELS.build(cfg.model).eval()


def _calibrate_bn(segmentor):
    """Trained-like BN: random affine, running statistics measured on a few random batches."""
    torch.manual_seed(0)
    for m in segmentor.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
            m.reset_running_stats()
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    segmentor.train()
    with torch.no_grad():
        for _ in range(3):
            segmentor._forward(torch.randn(2, 3, 256, 320))
    segmentor.eval()


@pytest.mark.parametrize('arch', ARCHS)
def test_parameter_counts_and_flops_equal_official(arch):
    seg = build_segmentor(arch)
    assert sum(p.numel() for p in seg.parameters()) == SEG_PARAMS[arch]
    cls = build_classifier(arch)
    assert sum(p.numel() for p in cls.parameters()) == CLS_PARAMS[arch]
    with torch.no_grad():
        assert cls(torch.randn(2, 3, 224, 224), mode='tensor').shape == (2, 1000)
    # GMACs at 512x512 as the paper counts them: BatchNorm (folded at inference) left out
    analyzer = flop_analyzer(ImageToOutputs(seg), (torch.randn(1, 3, 512, 512), ))
    with torch.no_grad():
        gmacs = (analyzer.total() - analyzer.by_operator()['batch_norm']) / 1e9
    assert abs(gmacs / GMACS[arch] - 1) < 0.02, gmacs


@pytest.mark.parametrize('arch,strides', [('tiny', [8, 32, 64]), ('large', [8, 16, 32, 64])])
def test_outputs_as_official(arch, strides):
    model = SeaFormer(arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 512, 512))
    assert [512 // o.shape[-1] for o in outs] == strides
    assert [o.shape[1] for o in outs] == model.out_channels


@pytest.mark.parametrize('hw', [(512, 512), (512, 1024), (1024, 2048), (375, 500), (97, 131)])
def test_any_input_size(hw):
    seg = build_segmentor('tiny')
    with torch.no_grad():
        logits = seg._forward(torch.randn(1, 3, *hw))
    assert logits.shape == (1, 150, -(-hw[0] // 8), -(-hw[1] // 8))
    assert torch.isfinite(logits).all()


def test_axial_position_embedding_follows_the_input():
    """The length-16 embeddings are resized linearly to each height/width."""
    model = SeaFormer('tiny').eval()
    attn = model.sea_stages[0][0].attn
    q = torch.zeros(1, attn.row_pos_q.pos_embed.shape[1], 16)
    torch.testing.assert_close(attn.row_pos_q(q), attn.row_pos_q.pos_embed)  # native length
    q8 = torch.zeros(1, q.shape[1], 8)
    torch.testing.assert_close(attn.row_pos_q(q8),
                               attn.row_pos_q.pos_embed.view(1, -1, 8, 2).mean(-1))


def _convert(official):
    """What tools/model_converters/seaformer2vtmm.py writes: backbone keys prefixed, heads."""
    out = {'backbone.' + k: v for k, v in checkpoint_filter_fn(official).items()}
    out.update(convert_head_keys(official))
    return out


@pytest.mark.parametrize('arch', ARCHS)
def test_converter_loads_official_layouts_strictly(arch):
    torch.manual_seed(0)
    seg_official = {k: torch.randn(v) if v else torch.tensor(3)
                    for k, v in OFFICIAL[SEG_LAYOUT[arch]].items()}
    seg = build_segmentor(arch)
    converted = _convert(seg_official)
    result = seg.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # values land where they belong, e.g. the official classifier conv and a pos embedding
    torch.testing.assert_close(seg.decode_head.conv_seg.weight,
                               seg_official['decode_head.conv_seg.weight'])
    torch.testing.assert_close(
        seg.backbone.sea_stages[1][0].attn.col_pos_k.pos_embed,
        seg_official['backbone.trans2.transformer_blocks.0.attn.pos_emb_columnk.pos_embed'])
    cls_official = {k: torch.randn(v) if v else torch.tensor(3)
                    for k, v in OFFICIAL[CLS_LAYOUT[arch]].items()}
    cls = build_classifier(arch)
    result = cls.load_state_dict(_convert(cls_official), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(cls.head.fc.weight, cls_official['linear.weight'])
    # every value, not only keys and shapes: each loaded tensor is exactly one official tensor
    assert_values_moved_one_to_one(seg.state_dict(), seg_official)
    assert_values_moved_one_to_one(cls.state_dict(), cls_official)
    # the filter alone gives the backbone's own keys (timm's contract)
    backbone = build_classifier(arch).backbone
    result = backbone.load_state_dict(checkpoint_filter_fn(cls_official), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_values_moved_one_to_one(backbone.state_dict(), cls_official, all_used=False)


def test_converter_cli_and_expand_less_blocks(tmp_path):
    """T/S/B's first inverted residual has no expansion conv (conv.0 = depthwise), L's has."""
    torch.manual_seed(0)
    official = {k: torch.randn(v) if v else torch.tensor(3)
                for k, v in OFFICIAL['SeaFormer_T_in1k_cls'].items()}
    ema = {k: v + 1 for k, v in official.items()}
    src = tmp_path / 'SeaFormer_T.pth'
    torch.save({'state_dict': official, 'state_dict_ema': ema, 'epoch': 10}, src)
    dst = tmp_path / 'seaformer-t_in1k.pth'
    proc = subprocess.run([sys.executable, 'tools/model_converters/seaformer2vtmm.py', str(src),
                           str(dst), '--ema'], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    assert 'classification' in proc.stdout
    converted = torch.load(dst, weights_only=True)['state_dict']
    torch.testing.assert_close(converted['backbone.mv2_stages.0.0.depthwise_conv.conv.weight'],
                               ema['smb1.layer1.conv.0.c.weight'])
    large = checkpoint_filter_fn({k: torch.zeros(v) for k, v in
                                  OFFICIAL['SeaFormer_L_in1k_cls'].items() if 'smb1.layer1' in k})
    assert 'mv2_stages.0.0.expand_conv.conv.weight' in large


@pytest.mark.parametrize('arch', ['small', 'large'])
def test_deploy_folds_every_conv_bn_and_keeps_outputs(arch):
    seg = build_segmentor(arch)
    _calibrate_bn(seg)
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        before = seg._forward(x)
        switch_to_deploy(seg)
        after = seg._forward(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in seg.modules())
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    assert before.abs().max() > 1e-2  # the comparison is not between zeros


def _dense_kernels(model):
    """The conv weights whose layout tells channels-last from contiguous (both of a 1x1 or a
    depthwise kernel, with their size-1 axes, are both)."""
    return [m.weight for m in model.modules()
            if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1 and m.kernel_size != (1, 1)]


@pytest.mark.parametrize('arch', ['tiny', 'large'])
def test_attention_widths_follow_the_arch(arch):
    """Each SeaFormer block's attention reads its stage's key width, the arch's heads and
    attn_ratio: q/k heads x key_dim wide, v attn_ratio times that (the official Sea_Attention's
    attributes, which users inspect)."""
    model = SeaFormer(arch, attn_ratio=3)
    zoo = SeaFormer.arch_zoo[arch]
    for stage, key_dim in zip(model.sea_stages, zoo['key_dims']):
        for block in stage:
            attn = block.attn
            assert (attn.key_dim, attn.num_heads) == (key_dim, zoo['num_heads'])
            assert attn.value_dim == 3 * key_dim * zoo['num_heads'] == attn.v.conv.out_channels
            assert attn.q.conv.out_channels == key_dim * zoo['num_heads']
            assert attn.scale == key_dim**-0.5


def test_default_arch_custom_arch_check_and_stochastic_depth():
    """SeaFormer() is SeaFormer-T; a custom arch whose SeaFormer width differs from the stage
    it follows is refused by name; stochastic depth rises linearly from 0 within each SeaFormer
    stage (the official schedule), with no DropPath module where the rate is 0."""
    from mmcv.cnn.bricks import DropPath
    assert SeaFormer().arch == SeaFormer.arch_zoo['tiny']
    custom = dict(SeaFormer.arch_zoo['tiny'], emb_dims=[128, 999])
    with pytest.raises(ValueError, match=re.escape(
            'SeaFormer: emb_dims[1]=999 must equal the channels of stage 4 (160), the last '
            "inverted-residual stage's output that the block reads")):
        SeaFormer(custom)
    model = SeaFormer('small', drop_path_rate=0.2)  # depths (3, 3)
    for stage in model.sea_stages:
        assert isinstance(stage[0].drop_path, torch.nn.Identity)
        assert [type(b.drop_path) for b in stage[1:]] == [DropPath, DropPath]
        assert [b.drop_path.drop_prob for b in stage[1:]] == pytest.approx([0.1, 0.2])
    assert all(isinstance(b.drop_path, torch.nn.Identity)
               for stage in SeaFormer('small', drop_path_rate=0.0).sea_stages for b in stage)


def test_switch_to_deploy_stores_kernels_channels_last_by_default():
    """The backbone's deploy mode stores its conv weights channels-last unless told not to (the
    speed-up its docstring gives comes from that layout)."""
    for kwargs, channels_last in (({}, True), (dict(channels_last=True), True),
                                  (dict(channels_last=False), False)):
        model = SeaFormer('tiny').eval()
        model.switch_to_deploy(**kwargs)
        kernels = _dense_kernels(model)
        assert kernels  # the stem's 3x3 convolutions
        assert all(w.is_contiguous(memory_format=torch.channels_last) is channels_last
                   for w in kernels), kwargs
        assert all(w.is_contiguous() is not channels_last for w in kernels), kwargs


def test_official_initialisation():
    """Without init_cfg, every conv is drawn from N(0, 2 / fan_out) with fan_out = k_h k_w
    C_out / groups (the authors' init) and its bias is zero; the check is statistical, per conv
    with enough weights to tell a 3x wrong std apart."""
    torch.manual_seed(0)
    model = SeaFormer('tiny')
    model.init_weights()
    checked = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            kh, kw = m.kernel_size
            std = (2.0 / (kh * kw * m.out_channels // m.groups)) ** 0.5
            if m.weight.numel() >= 500:
                assert abs(float(m.weight.std()) / std - 1) < 0.15, (m, float(m.weight.std()), std)
                assert abs(float(m.weight.mean())) < 0.2 * std
                checked += 1
            if m.bias is not None:
                assert not m.bias.any()
    assert checked > 20 and any(
        m.kernel_size == (3, 3) and m.weight.numel() >= 500 for m in model.modules()
        if isinstance(m, torch.nn.Conv2d))
    # the official Conv2d_BN's BN starts at weight 1 and bias 0, but the attention's
    # projections (row, column, output) start at weight 0: the block starts as its shortcut
    bns = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    zero = {n for n in bns if n.rsplit('.', 2)[-2] in ('row_proj', 'col_proj', 'out_proj')}
    assert len(zero) == 3 * sum(len(stage) for stage in model.sea_stages)
    for name, bn in bns.items():
        assert torch.equal(bn.weight, torch.full_like(bn.weight, 0.0 if name in zero else 1.0))
        assert not bn.bias.any()


@pytest.mark.runtime
def test_onnx_export_matches_pytorch(tmp_path):
    pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    seg = build_segmentor('tiny')
    _calibrate_bn(seg)
    x = torch.randn(1, 3, 512, 512)
    path = str(tmp_path / 'seaformer-tiny.onnx')
    with torch.no_grad():
        expected = seg._forward(x).numpy()
        from vt_mm.deploy import export_onnx
        export_onnx(seg, path, (512, 512), dynamic=False)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    (got, ) = session.run(None, {'input': x.numpy()})
    assert got.shape == (1, 150, 64, 64)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('arch,strides', [('tiny', [8, 32, 64]), ('large', [8, 16, 32, 64])])
def test_out_indices_at_their_bounds(arch, strides):
    """-n and n - 1 are the first and last valid indices of n outputs; -n - 1, n and an empty
    selection are refused with the outputs' strides."""
    n = len(strides)
    assert SeaFormer(arch, out_indices=(-n, )).out_indices == (0, )
    assert SeaFormer(arch, out_indices=(n - 1, -1)).out_indices == (n - 1, n - 1)
    for bad in ((-n - 1, ), (n, ), ()):
        with pytest.raises(ValueError, match=re.escape(
                f'out_indices {bad} out of range: this SeaFormer has {n} outputs (strides '
                f'{strides})')):
            SeaFormer(arch, out_indices=bad)


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match=r"SeaFormer: unknown arch "
                                         r"'huge'.*base.*large.*small.*tiny"):
        SeaFormer('huge')
    with pytest.raises(ValueError, match='out_indices'):
        SeaFormer('tiny', out_indices=(3, ))
    with pytest.raises(ValueError, match='3-channel'):
        SeaFormer('tiny')(torch.randn(1, 4, 64, 64))
    from vt_mm.models.heads import LightHead
    with pytest.raises(ValueError, match='one more input than embed_dims'):
        LightHead(embed_dims=[64, 96], in_channels=[32, 128], in_index=[0, 1], channels=96,
                  num_classes=150)


def test_no_decay_on_position_embeddings_and_head_lr_x10():
    from mmengine.optim import build_optim_wrapper
    seg = build_segmentor('tiny')
    cfg = Config.fromfile('configs/seaformer/seaformer-tiny_8xb4-160k_ade20k-512x512.py')
    wrapper = build_optim_wrapper(seg, cfg.optim_wrapper)
    groups = wrapper.optimizer.param_groups
    pos = seg.backbone.sea_stages[0][0].attn.row_pos_q.pos_embed
    head = seg.decode_head.conv_seg.weight
    conv = seg.backbone.stem.conv.weight
    find = {id(p): g for g in groups for p in g['params']}
    assert find[id(pos)]['weight_decay'] == 0
    assert find[id(head)]['lr'] == pytest.approx(10 * cfg.optim_wrapper.optimizer.lr)
    assert find[id(conv)]['weight_decay'] == 0.01
    assert cfg.param_scheduler[0]['end'] == 1500


TRAIN_CFG = """
_base_ = [{base!r}]
data_root = {root!r}
crop_size = (64, 64)
model = dict(data_preprocessor=dict(size=crop_size), backbone=dict(drop_path_rate=0.0),
             decode_head=dict(num_classes=3))
train_pipeline = [dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='RandomCrop', crop_size=crop_size), dict(type='PackSegInputs')]
test_pipeline = [dict(type='LoadImageFromFile'),
                 dict(type='LoadAnnotations', reduce_zero_label=True),
                 dict(type='PackSegInputs')]
metainfo = dict(classes=('wall', 'building', 'sky'))  # ADE20K's first 3 classes
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=20, val_interval=20)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5)]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=20))
"""


@pytest.mark.slow
def test_short_ade20k_run_through_tools(tmp_path):
    from vt_mm.datasets.demo_shapes import make_demo_ade20k
    data = tmp_path / 'ade'
    make_demo_ade20k(str(data), num_train=8, num_val=2)
    cfg = tmp_path / 'seaformer_ade_tiny.py'
    cfg.write_text(TRAIN_CFG.format(
        base=osp.join(ROOT, 'configs/seaformer/seaformer-tiny_8xb4-160k_ade20k-512x512.py'),
        root=str(data)))
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, 'tools/train.py', str(cfg), '--work-dir', str(work)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert 'mIoU' in out and 'SyncBN' in out  # SyncBN of the config replaced on the CPU
    proc = subprocess.run([sys.executable, 'tools/test.py', str(cfg), str(work / 'iter_20.pth'),
                           '--work-dir', str(work / 'test')], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert 'mIoU' in proc.stdout + proc.stderr


# --- an independent functional re-derivation of the official forward, on official keys --------
T_TABLES = [[[3, 1, 16, 1], [3, 4, 16, 2], [3, 3, 16, 1]], [[5, 3, 32, 2], [5, 3, 32, 1]],
            [[3, 3, 64, 2], [3, 3, 64, 1]], [[5, 3, 128, 2]], [[3, 6, 160, 2]]]  # official T cfgs


def _official_tiny_forward(w, x, heads=4, key_dim=(16, 24)):
    import torch.nn.functional as F

    def conv_bn(x, p, stride=1, groups=1, conv='c', bn='bn'):
        weight = w[f'{p}.{conv}.weight']
        x = F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, groups)
        return F.batch_norm(x, w[f'{p}.{bn}.running_mean'], w[f'{p}.{bn}.running_var'],
                            w[f'{p}.{bn}.weight'], w[f'{p}.{bn}.bias'], False, 0.0, 1e-5)

    def hsig(x):
        return F.relu6(x + 3) / 6

    def attention(x, p, kd):
        b, _, h, wd = x.shape
        q, k, v = (conv_bn(x, f'{p}.to_{n}') for n in 'qkv')
        dh = v.shape[1]
        mixed = conv_bn(torch.cat([q, k, v], 1), f'{p}.dwconv', groups=2 * q.shape[1] + dh)
        qkv = conv_bn(F.relu6(mixed), f'{p}.pwconv')

        def axial(qs, ks, vs, pq, pk, length):
            qs = qs + F.interpolate(w[f'{p}.{pq}.pos_embed'], size=length, mode='linear',
                                    align_corners=False)
            ks = ks + F.interpolate(w[f'{p}.{pk}.pos_embed'], size=length, mode='linear',
                                    align_corners=False)
            qs = qs.reshape(b, heads, -1, length).permute(0, 1, 3, 2)
            ks = ks.reshape(b, heads, -1, length)
            vs = vs.reshape(b, heads, -1, length).permute(0, 1, 3, 2)
            a = (qs @ ks * kd ** -0.5).softmax(-1)
            return (a @ vs).permute(0, 1, 3, 2).reshape(b, dh, length)

        row = axial(q.mean(-1), k.mean(-1), v.mean(-1), 'pos_emb_rowq', 'pos_emb_rowk', h)
        col = axial(q.mean(-2), k.mean(-2), v.mean(-2), 'pos_emb_columnq', 'pos_emb_columnk', wd)
        row = conv_bn(F.relu6(row.reshape(b, dh, h, 1)), f'{p}.proj_encode_row.1')
        col = conv_bn(F.relu6(col.reshape(b, dh, 1, wd)), f'{p}.proj_encode_column.1')
        gate = conv_bn(F.relu6(v + row + col), f'{p}.proj.1')
        return hsig(gate) * qkv

    def block(x, p, kd):
        x = x + attention(x, f'{p}.attn', kd)
        hid = conv_bn(x, f'{p}.mlp.fc1')
        hid = F.conv2d(hid, w[f'{p}.mlp.dwconv.weight'], w[f'{p}.mlp.dwconv.bias'], 1, 1, 1,
                       hid.shape[1])
        return x + conv_bn(F.relu6(hid), f'{p}.mlp.fc2')

    x = F.relu(conv_bn(x, 'backbone.smb1.stem_block.0', 2))
    outs, channels = [], 16
    for s, table in enumerate(T_TABLES):
        for j, (k, t, c, stride) in enumerate(table):
            p = f'backbone.smb{s + 1}.layer{j + 1}.conv'
            inp, hidden = x, channels * t
            if t != 1:
                x = F.relu(conv_bn(x, f'{p}.0'))
                x = F.relu(conv_bn(x, f'{p}.2', stride, hidden))
                x = conv_bn(x, f'{p}.4')
            else:
                x = conv_bn(F.relu(conv_bn(x, f'{p}.0', stride, hidden)), f'{p}.2')
            if stride == 1 and channels == c:
                x = x + inp
            channels = c
        if s >= 3:
            for bi in range(2):
                x = block(x, f'backbone.trans{s - 2}.transformer_blocks.{bi}', key_dim[s - 3])
        if s in (1, 3, 4):
            outs.append(x)
    detail = outs[0]
    for i, deep in enumerate(outs[1:]):
        p = f'decode_head.fuse{i + 1}'
        local = conv_bn(detail, f'{p}.local_embedding', conv='conv')
        g = hsig(conv_bn(deep, f'{p}.global_act', conv='conv'))
        detail = local * F.interpolate(
            g, size=local.shape[2:], mode='bilinear', align_corners=False)
    fused = F.relu(conv_bn(detail, 'decode_head.linear_fuse', groups=detail.shape[1], conv='conv'))
    return F.conv2d(fused, w['decode_head.conv_seg.weight'], w['decode_head.conv_seg.bias'])


def test_converted_official_weights_give_the_official_outputs():
    """Random weights in the official layout: our model after conversion and a functional
    re-derivation of the official forward (written against the official keys) agree, at an odd
    non-square size where swapped rows/columns or a wrong mapping would show."""
    torch.manual_seed(0)
    official = {}
    for k, shape in OFFICIAL[SEG_LAYOUT['tiny']].items():
        if k.endswith('num_batches_tracked'):
            official[k] = torch.tensor(0)
        elif k.endswith('running_var'):
            official[k] = torch.rand(shape) + 0.5
        elif k.endswith(('bn.weight', 'bn.bias', 'running_mean')):
            official[k] = torch.rand(shape) * 0.5 + (0.75 if k.endswith('weight') else -0.25)
        else:
            official[k] = torch.randn(shape) * (0.5 if 'pos_emb' in k else 0.2)
    seg = build_segmentor('tiny')
    seg.load_state_dict(_convert(official), strict=True)
    x = torch.randn(1, 3, 200, 312)
    with torch.no_grad():
        ours = seg._forward(x)
        reference = _official_tiny_forward(official, x)
    assert ours.shape == reference.shape == (1, 150, 25, 39)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
@pytest.mark.parametrize('dataset,classes,crop,batch', [
    ('pascal-context-480x480', 60, (480, 480), None),
    ('pascal-context-59-480x480', 59, (480, 480), 4),
    ('coco-stuff10k-512x512', 171, (512, 512), 4),
])
def test_pascal_context_and_coco_stuff10k_configs(arch, dataset, classes, crop, batch):
    """The authors' other datasets: same backbone and head as ADE20K, only the class count
    differs (parameters: ADE20K's + (channels + 1) x (classes - 150)); their 80k recipe."""
    import glob
    found = glob.glob(osp.join(ROOT, f'configs/seaformer/seaformer-{arch}_8xb*-80k_{dataset}.py'))
    assert len(found) == 1, found
    cfg = Config.fromfile(found[0])
    ade = build_segmentor(arch)
    seg = build_segmentor(arch, found[0])
    head = seg.decode_head
    assert head.num_classes == classes and head.conv_seg.out_channels == classes
    n_ade = sum(p.numel() for p in ade.parameters())
    n_new = sum(p.numel() for p in seg.parameters())
    assert n_new - n_ade == (head.channels + 1) * (classes - 150)
    differs = {k for k, v in seg.state_dict().items() if v.shape != ade.state_dict()[k].shape}
    assert differs == {'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias'}
    assert set(seg.state_dict()) == set(ade.state_dict())
    # the recipe: 80k iterations, AdamW 2e-4, warm-up 1500, crop, batch per GPU
    assert cfg.train_cfg.max_iters == 80000 and cfg.optim_wrapper.optimizer.lr == 2e-4
    assert cfg.param_scheduler[1].end == 80000 and cfg.param_scheduler[0].end == 1500
    assert tuple(cfg.crop_size) == crop and tuple(cfg.model.data_preprocessor.size) == crop
    expected_batch = batch or (2 if arch == 'small' else 4)  # as the authors' files set it
    assert cfg.train_dataloader.batch_size == expected_batch
    assert cfg.train_dataloader.dataset.type == dict(
        pascal='PascalContextDataset', coco='COCOStuffDataset')[dataset.split('-')[0]] + (
            '59' if '-59-' in dataset else '')


@pytest.mark.parametrize('arch', ['tiny', 'large'])
def test_converter_is_independent_of_key_order(arch):
    """Which inverted residuals have an expansion conv is read from all of a block's keys:
    the result must not depend on the order in which a checkpoint lists them (T's first block
    has none, L's has one)."""
    official = {k: torch.randn(v) if v else torch.tensor(3)
                for k, v in OFFICIAL[CLS_LAYOUT[arch]].items()}
    forward = checkpoint_filter_fn(official)
    backward = checkpoint_filter_fn(dict(reversed(list(official.items()))))
    assert set(forward) == set(backward)
    assert all(torch.equal(forward[k], backward[k]) for k in forward)
    assert ('mv2_stages.0.0.expand_conv.conv.weight' in forward) == (arch == 'large')


def test_converter_refuses_stray_keys_in_a_segmentation_checkpoint():
    official = {k: torch.zeros(v) if v else torch.tensor(3)
                for k, v in OFFICIAL[SEG_LAYOUT['tiny']].items()}
    official['auxiliary_head.conv.weight'] = torch.zeros(1)
    with pytest.raises(KeyError) as info:
        checkpoint_filter_fn(official)
    assert str(info.value) == ("\"Unexpected key 'auxiliary_head.conv.weight' in a SeaFormer "
                               'segmentation checkpoint"')
