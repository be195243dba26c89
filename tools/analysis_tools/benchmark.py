"""Params, FLOPs and latency of any vt-mm (mmseg / mmdet / mmpretrain) config; optionally two
configs side by side.

    python tools/analysis_tools/benchmark.py CONFIG [CONFIG_B] [--shape H W] [--runs 10]
        [--warmup 2] [--threads 2] [--device cpu|cuda] [--batch 1] [--no-latency] [--json FILE]
        [--onnxruntime]
    python tools/analysis_tools/benchmark.py --family vt-resnet|pyramid-tnt|seaformer [--runs N]
    python tools/analysis_tools/benchmark.py --model-zoo docs/en/model_zoo.md [--only REGEX]
        [--runs 3] [--threads 2] [--no-onnxruntime]

``--model-zoo`` measures every model listed in model-index.yml (the OpenMMLab metafiles under
configs/) at the paper's resolution and writes the model-zoo table: our params and FLOPs next
to the paper's, whether the parameter count equals the authors' model, CPU latency, and the
paper's result with its source.

What is measured: the network from a normalised image batch to the raw head outputs
(segmentation logits, detector head maps before NMS, classifier logits).

* Params: all parameters of the built model.
* FLOPs: mmengine.analysis multiply-adds (1 MAC = 1 FLOP, the convention of the papers'
  "FLOPs"/"GMACs"), with two changes to its defaults: fused attention
  (``aten::scaled_dot_product_attention``, which mmengine skips silently) and ``baddbmm`` are
  counted as their two/one matrix products, and BatchNorm is left out because it folds into the
  preceding conv at inference (add ``--count-bn`` to include it). Ops that remain uncounted are
  listed.
* Latency: ``--warmup`` untimed passes, then ``--runs`` timed ones (CUDA synchronised when on
  GPU); median, min and max in ms and throughput in images/s. With two configs both are timed
  alternately in the same loop, so machine noise hits both, and the ratio is printed.
* ``--onnxruntime``: the exported graph (vt_mm.deploy; static shape) run by onnxruntime's CPU
  provider with as many threads as torch, timed in the same alternating loop as PyTorch eager
  on the same input; detectors export (and compare) their backbone + neck.

``--family`` compares a vt-mm family with what it replaces or reproduces, at the papers' sizes:
VT-ResNet against ResNet (whole classifiers and the last stage), PyramidTNT's fused attention
against the official explicit path (and at a detection input), SeaFormer in eager and deploy
mode against mmseg's mobile baselines.

Input size: ``--shape``, else the config's ``crop_size`` (mmseg), 800x1333 (mmdet) or the test
crop (mmpretrain). Works on CPU-only machines and mmengine 0.10.x, where mmseg's get_flops and
mmdet's benchmark tools do not.
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple

import torch

from vt_mm.analysis import ImageToOutputs, build_model, count_flops, default_shape, time_alternately


def onnxruntime_runner(model, toolbox: str, x: torch.Tensor):
    """The exported part of ``model`` (vt_mm.deploy.exportable: the whole network for
    segmentors and classifiers, backbone + neck for detectors) as an onnxruntime session on the
    same input and the same number of threads (static shape: ORT optimises fixed shapes better,
    which is how one deploys at a known size); returns ``(eager part, onnxruntime run)``."""
    import tempfile

    import onnxruntime as ort

    from vt_mm.deploy import export_onnx, exportable
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:  # the session keeps the graph in memory
        path = osp.join(tmp, 'model.onnx')
        export_onnx(model, path, tuple(x.shape[2:]), dynamic=False, toolbox=toolbox)
        session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    part = exportable(model, toolbox)
    feed = {'input': x.cpu().numpy()}
    return (lambda: part(x)), (lambda: session.run(None, feed))


def measure(configs: List[str], shape: Optional[Tuple[int, int]] = None, runs: int = 10,
            warmup: int = 2, device: str = 'cpu', batch: int = 1, latency: bool = True,
            count_bn: bool = False, onnxruntime: bool = False,
            verbose: bool = False) -> List[Dict]:
    """One row per config; ``onnxruntime`` (CPU) adds the exported graph's latency, timed in
    the same alternating loop as PyTorch eager (for detectors also the eager backbone + neck,
    the part that is exported)."""
    if onnxruntime and latency and device != 'cpu':
        raise ValueError('the onnxruntime column is measured on the CPU')
    rows, timed = [], []  # timed: (callable, row index, what it times)
    for i, config in enumerate(configs):
        model, cfg, toolbox = build_model(config, verbose=verbose)
        hw = tuple(shape) if shape else default_shape(cfg, toolbox)
        divisor = getattr(model.data_preprocessor, 'pad_size_divisor', 1) or 1
        hw = tuple(-(-v // divisor) * divisor for v in hw)  # as the preprocessor pads batches
        net = ImageToOutputs(model, toolbox).to(device)
        x = torch.randn(batch, 3, *hw, device=device)
        flops, skipped = count_flops(net, x[:1], count_bn)
        rows.append(dict(config=config, toolbox=toolbox, shape=list(hw),
                         params=sum(p.numel() for p in model.parameters()), flops=flops,
                         uncounted_ops=skipped))
        timed.append((lambda net=net, x=x: net(x), i, 'latency'))
        if onnxruntime and latency:
            eager_part, ort_run = onnxruntime_runner(model, toolbox, x)
            # segmentors and classifiers export the whole network: its eager time is the row's
            if toolbox == 'mmdet':
                timed.append((eager_part, i, 'eager_exported'))
            timed.append((ort_run, i, 'onnxruntime'))
    if latency:
        label = ' vs '.join(osp.basename(c) for c in configs)
        times = time_alternately([fn for fn, _, _ in timed], runs, warmup, device, label)
        for (_, i, what), (med, lo, hi) in zip(timed, times):
            rows[i][f'{what}_ms'] = med * 1e3
            if what == 'latency':
                rows[i].update(latency_min_ms=lo * 1e3, latency_max_ms=hi * 1e3,
                               images_per_s=batch / med, device=device, batch=batch,
                               threads=torch.get_num_threads() if device == 'cpu' else None)
        for row in rows:
            if 'onnxruntime_ms' in row:
                row['exported'] = ('backbone + neck' if 'eager_exported_ms' in row else
                                   'whole network')
                row.setdefault('eager_exported_ms', row['latency_ms'])
    return rows


def format_rows(rows: List[Dict]) -> str:
    with_ort = any('onnxruntime_ms' in r for r in rows)
    ort_head = ' exported | eager ms | onnxruntime ms | eager / onnxruntime |' if with_ort else ''
    lines = ['| config | input | params (M) | GFLOPs | latency ms (min-max) | images/s |' +
             ort_head, '|---|---|---|---|---|---|' + ('---|' * 4 if with_ort else '')]
    for r in rows:
        lat = (f"{r['latency_ms']:.1f} ({r['latency_min_ms']:.1f}-{r['latency_max_ms']:.1f})"
               if 'latency_ms' in r else '-')
        ips = f"{r['images_per_s']:.2f}" if 'images_per_s' in r else '-'
        ort_cells = ''
        if with_ort:
            ort_cells = (f" {r['exported']} | {r['eager_exported_ms']:.1f} | "
                         f"{r['onnxruntime_ms']:.1f} | "
                         f"{r['eager_exported_ms'] / r['onnxruntime_ms']:.2f}x |"
                         if 'onnxruntime_ms' in r else ' - | - | - | - |')
        lines.append(f"| {r['config']} | {r['shape'][0]}x{r['shape'][1]} | "
                     f"{r['params'] / 1e6:.2f} | {r['flops'] / 1e9:.3f} | {lat} | {ips} |" +
                     ort_cells)
    if len(rows) == 2 and all('latency_ms' in r for r in rows):
        a, b = rows
        lines.append(f"\nA / B: params {a['params'] / b['params']:.2f}x, FLOPs "
                     f"{a['flops'] / b['flops']:.2f}x, latency "
                     f"{a['latency_ms'] / b['latency_ms']:.2f}x "
                     '(>1: B is faster)')
    skipped = sorted({op for r in rows for op in r['uncounted_ops']})
    if skipped:
        lines.append(f"\nops not counted in FLOPs: {', '.join(skipped)}")
    return '\n'.join(lines)


ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_model_index(root: str = ROOT) -> List[Dict]:
    """Every model of the metafiles imported by model-index.yml, with its collection."""
    import yaml
    with open(osp.join(root, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    models = []
    for meta in index['Import']:
        with open(osp.join(root, meta)) as f:
            data = yaml.safe_load(f)
        collections = {c['Name']: c for c in data.get('Collections', [])}
        for m in data['Models']:
            models.append(dict(m, collection=collections.get(m['In Collection'], {})))
    return models


def _params_verdict(measured: int, meta: Dict) -> str:
    if 'Official Parameters' in meta:
        official = int(meta['Official Parameters'])
        return 'equal' if measured == official else f'differs by {measured - official:+,d}'
    if 'Parameters' in meta:
        rel = measured / float(meta['Parameters']) - 1
        return f'{rel * 100:+.1f}% vs paper (no official model)'
    return 'no reference'


DEPLOY_LATENCY_START = '<!-- deploy-latency:start -->'
DEPLOY_LATENCY_END = '<!-- deploy-latency:end -->'
DEPLOY_LATENCY_HEADING = '## Deployment latency'


def deployment_latency_section(
        path: str = osp.join(ROOT, 'benchmarks', 'reports', 'deployment.md')) -> str:
    """The model zoo's deployment section: the latency table of the deployment report (between
    its deploy-latency markers; measured by benchmarks/deploy_benchmark.py, too long to rerun
    with the zoo), '' if there is none."""
    if not osp.isfile(path):
        return ''
    text = open(path).read()
    if DEPLOY_LATENCY_START not in text or DEPLOY_LATENCY_END not in text:
        return ''
    block = text.split(DEPLOY_LATENCY_START, 1)[1].split(DEPLOY_LATENCY_END, 1)[0].strip()
    return (f'\n{DEPLOY_LATENCY_HEADING} (onnxruntime, OpenVINO, MNN, ncnn, TFLite)\n\n'
            'Copied from [the deployment report]'
            '(../../benchmarks/reports/deployment.md#latency-every-family-x-backend) by the '
            'model-zoo tool; measured by `benchmarks/deploy_benchmark.py`.\n\n'
            f'{block}\n')


def write_model_zoo(out: str, only: Optional[str] = None, runs: int = 3, warmup: int = 1,
                    onnxruntime: bool = True) -> str:
    import re
    rows = []
    models = [m for m in load_model_index() if not only or re.search(only, m['Name'])]
    for i, m in enumerate(models):
        meta = m.get('Metadata', {})
        shape = tuple(int(v) for v in str(meta['Resolution']).split('x')) if 'Resolution' in \
            meta else None
        print(f'[benchmark] model zoo {i + 1}/{len(models)}: {m["Name"]}', file=sys.stderr,
              flush=True)
        try:
            (r, ) = measure([osp.join(ROOT, m['Config'])], shape, runs, warmup,
                            latency=runs > 0, onnxruntime=onnxruntime and runs > 0)
        except Exception as e:  # noqa: BLE001 - one failing model must not lose the table
            print(f'[benchmark] {m["Name"]} failed: {type(e).__name__}: {e}', file=sys.stderr)
            rows.append(f"| {m['Name']} | - | - | - | - | - | - | - | - | measurement failed: "
                        f"{type(e).__name__} | - |")
            continue
        result = ', '.join(f'{k} {v}' for res in m.get('Results', []) or []
                           for k, v in res['Metrics'].items()) or '-'
        dataset = ', '.join(res['Dataset'] for res in m.get('Results', []) or []) or \
            meta.get('Training Data', '-')
        paper = m['collection'].get('Paper', {})
        note = m.get('Note', paper.get('Title', ''))
        source = f"[{note}]({paper['URL']})" if paper.get('URL') else note
        paper_flops = f"{meta['FLOPs'] / 1e9:.3f}" if 'FLOPs' in meta else '-'
        lat = f"{r['latency_ms']:.0f}" if 'latency_ms' in r else '-'
        ort_ms = '-'
        if 'onnxruntime_ms' in r:
            part = ' (backbone + neck)' if r['exported'] == 'backbone + neck' else ''
            ort_ms = (f"{r['onnxruntime_ms']:.0f}{part}, "
                      f"{r['eager_exported_ms'] / r['onnxruntime_ms']:.2f}x")
        rows.append(f"| {m['Name']} | {dataset} | {r['shape'][0]}x{r['shape'][1]} | "
                    f"{r['params'] / 1e6:.2f} | {_params_verdict(r['params'], meta)} | "
                    f"{r['flops'] / 1e9:.3f} | {paper_flops} | {lat} | {ort_ms} | {result} | "
                    f"{source} |")
    header = [
        '# Model zoo',
        '',
        'Generated by `python tools/analysis_tools/benchmark.py --model-zoo docs/en/model_zoo.md`',
        'from model-index.yml. vt-mm ships configs, not trained weights: the results column is',
        'what the papers report for these configs (source linked); params, FLOPs and latency are',
        'measured on the models these configs build. FLOPs: multiply-adds without BatchNorm, fused',
        f'attention counted (GFLOPs). Latency: batch 1, median of {runs} runs on the CPU',
        f'({torch.get_num_threads()} threads, torch {torch.__version__}), image to raw head',
        'outputs (detectors: before the final NMS; two-stage RoI heads run on the RPN\'s 1000',
        'proposals, which dominates their FLOPs). "Params vs official" compares with the',
        'authors\' model where one exists, else with the paper\'s rounded figure. "onnxruntime',
        'ms": the graph of `tools/deployment/export_onnx.py` (static shape) in onnxruntime\'s CPU',
        'provider with the same threads, timed alternately with PyTorch eager on the same input,',
        'and eager / onnxruntime; for detectors the exported part is the backbone + neck and the',
        'ratio compares it with the eager backbone + neck.',
        '',
        '| model | data | input HxW | params (M) | params vs official | GFLOPs | paper GFLOPs '
        '| CPU ms | onnxruntime ms, speed-up | paper result | source |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    if only and osp.isfile(out):  # update these rows of an existing table, keep the others
        fresh = {r.split(' | ')[0]: r for r in rows}
        table = open(out).read().split(f'\n{DEPLOY_LATENCY_HEADING}', 1)[0]
        kept = [line for line in table.splitlines() if line.startswith('| ') and
                not line.startswith('| model |') and line.split(' | ')[0] not in fresh]
        order = {m['Name']: i for i, m in enumerate(load_model_index())}
        rows = sorted(kept + rows, key=lambda r: order.get(r.split(' | ')[0][2:], 1e9))
    text = '\n'.join(header + rows) + '\n' + deployment_latency_section()
    with open(out, 'w') as f:
        f.write(text)
    return text


# ----------------------------------------------------------------------------------------------
# --family: each vt-mm family against what it replaces or reproduces, with the papers' numbers

# depth -> (ResNet GFLOPs, M params), (VT-ResNet GFLOPs, M params, table): the VT paper
VT_RESNET_PAPER = {
    18: ((1.814, 11.7), (1.569, 11.7, 'T8')),
    34: ((3.664, 21.8), (3.299, 21.8, 'T2')),
    50: ((4.089, 25.5), (3.412, 21.4, 'T8')),
    101: ((7.802, 44.4), (7.129, 41.5, 'T8')),
}
# arch -> (M params with the 1000-class head, GMACs at the native size): the PyramidTNT paper
PYRAMID_TNT_PAPER = {'ti': (10.58, 0.59), 's': (31.95, 3.28), 'm': (84.94, 8.20),
                     'b': (156.99, 15.97)}
SEAFORMER_BASELINES = {
    'MobileNetV3-L LR-ASPP (mmseg)':
    'mmseg::mobilenet_v3/mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024.py',
    'MobileNetV2 DeepLabV3+ (mmseg)':
    'mmseg::mobilenet_v2/mobilenet-v2-d8_deeplabv3plus_4xb4-160k_ade20k-512x512.py',
}


class _Classifier(torch.nn.Module):
    """Backbone + average pooling + 1000-way linear, the VT paper's ImageNet classifier."""

    def __init__(self, backbone, last_stage: str):
        super().__init__()
        self.backbone = backbone
        self.last_stage = last_stage
        self.fc = torch.nn.Linear(backbone.feat_dim, 1000)

    def forward(self, x):
        return self.fc(self.backbone(x)[-1].flatten(2).mean(dim=2))


def _num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def vt_resnet_family(depths=(18, 34, 50, 101), runs: int = 10, warmup: int = 2) -> str:
    """ResNet vs VT-ResNet ImageNet classifiers at 224x224: params, GFLOPs (multiply-adds
    without BatchNorm, the VT paper's convention), the last stage's GFLOPs (ResNet's layer4
    against the VT modules that replace it) and latency, timed alternately."""
    from mmpretrain.models.backbones import ResNet

    from vt_mm.analysis import flop_analyzer
    from vt_mm.models.backbones import VTResNet

    def gflops(model, x):
        with torch.no_grad():
            analyzer = flop_analyzer(model, (x, ))
            total = analyzer.total() - analyzer.by_operator().get('batch_norm', 0)
            last = analyzer.by_module_and_operator()[f'backbone.{model.last_stage}']
        return total / 1e9, (sum(last.values()) - last.get('batch_norm', 0)) / 1e9

    x = torch.randn(1, 3, 224, 224)
    lines = [f'ImageNet classifiers at 224x224, batch 1, CPU {torch.get_num_threads()} threads; '
             'paper values in brackets', '',
             '| depth | ResNet params M | VT-ResNet params M | ResNet GFLOPs | VT-ResNet GFLOPs '
             '| last stage GFLOPs ResNet / VT | last-stage ratio | ResNet ms | VT-ResNet ms '
             '| latency ratio |', '|---|---|---|---|---|---|---|---|---|---|']
    for depth in depths:
        resnet = _Classifier(ResNet(depth), 'layer4').eval()
        vt = _Classifier(VTResNet(depth, out_type='tokens'), 'vt_modules').eval()
        (r_total, r_last), (v_total, v_last) = gflops(resnet, x), gflops(vt, x)
        (r_s, *_), (v_s, *_) = time_alternately([lambda: resnet(x), lambda: vt(x)], runs,
                                                warmup, 'cpu', f'VT-ResNet-{depth}')
        (paper_r, paper_rp), (paper_v, paper_vp, table) = VT_RESNET_PAPER[depth]
        lines.append(
            f'| {depth} | {_num_params(resnet) / 1e6:.2f} ({paper_rp}) | '
            f'{_num_params(vt) / 1e6:.2f} ({paper_vp}, {table}) | {r_total:.3f} ({paper_r}) | '
            f'{v_total:.3f} ({paper_v}, {table}) | {r_last:.3f} / {v_last:.3f} | '
            f'{r_last / v_last:.1f}x | {r_s * 1e3:.1f} | {v_s * 1e3:.1f} | {r_s / v_s:.2f}x |')
    return '\n'.join(lines)


def pyramid_tnt_family(archs=('ti', 's', 'm', 'b'), runs: int = 5, warmup: int = 1,
                       detection_size: Optional[Tuple[int, int]] = (800, 1333)) -> str:
    """PyramidTNT backbones at the native size (and a detection input): params with the
    1000-class head, GFLOPs (counted on the explicit attention path, whose products the counter
    sees) and latency of vt-mm's fused attention against the explicit softmax(q k^T + bias) v
    path that computes what the official code does, timed alternately; the largest output
    difference between the two paths."""
    from vt_mm.analysis import flop_analyzer
    from vt_mm.models.backbones import PyramidTNT

    def run(model, x, fused):
        model.set_fused_attn(fused)
        return model(x)

    lines = [f'PyramidTNT backbone, batch 1, CPU {torch.get_num_threads()} threads', '',
             '| arch | input | params (M, with head) | paper params | GFLOPs | paper GMACs | '
             'fused ms | official-path ms | speed-up | max abs diff |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for arch in archs:
        model = PyramidTNT(arch).eval()
        model.init_weights()
        params = _num_params(model) + model.num_features * 1000 + 1000
        for hw in [tuple(model.img_size)] + ([tuple(detection_size)] if detection_size else []):
            native = hw == tuple(model.img_size)
            x = torch.randn(1, 3, *hw)
            model.set_fused_attn(False)
            with torch.no_grad():
                flops = flop_analyzer(model, (x, )).total()
                diff = max((a - b).abs().max().item()
                           for a, b in zip(run(model, x, True), run(model, x, False)))
            (fused_s, *_), (explicit_s, *_) = time_alternately(
                [lambda: run(model, x, True), lambda: run(model, x, False)],
                runs if native else max(1, runs // 2), warmup, 'cpu', f'PyramidTNT-{arch}')
            paper_p, paper_f = PYRAMID_TNT_PAPER[arch] if native else ('-', '-')
            lines.append(f'| {arch.upper()} | {hw[0]}x{hw[1]} | {params / 1e6:.2f} | {paper_p} | '
                         f'{flops / 1e9:.2f} | {paper_f} | {fused_s * 1e3:.1f} | '
                         f'{explicit_s * 1e3:.1f} | {explicit_s / fused_s:.2f}x | {diff:.1e} |')
        model.set_fused_attn(True)
    return '\n'.join(lines)


def seaformer_family(archs=('tiny', 'small', 'base', 'large'), shape=(512, 512),
                     runs: int = 10, warmup: int = 2, baselines: bool = True) -> str:
    """SeaFormer segmentors in eager and deploy mode (every Conv-BN pair folded; outputs checked
    within 1e-4) next to mmseg's mobile baselines, all timed alternately: median (min-max) ms,
    the deploy speed-up and the ratio to MobileNetV3-L LR-ASPP."""
    import copy

    from vt_mm.models.folding import switch_to_deploy

    x = torch.randn(1, 3, *shape)
    models = {}
    for arch in archs:
        config = osp.join(ROOT, f'configs/seaformer/seaformer-{arch}_8xb4-160k_ade20k-512x512.py')
        eager = build_model(config)[0]
        deploy = switch_to_deploy(copy.deepcopy(eager))
        with torch.no_grad():
            diff = (eager._forward(x) - deploy._forward(x)).abs().max().item()
        if diff >= 1e-4:
            raise RuntimeError(f'deploy mode changed the SeaFormer-{arch} output by {diff:.1e}')
        models[f'SeaFormer-{arch[0].upper()}'] = eager
        models[f'SeaFormer-{arch[0].upper()} deploy'] = deploy
    if baselines:
        models.update({name: build_model(config)[0]
                       for name, config in SEAFORMER_BASELINES.items()})
    timings = time_alternately([lambda m=m: m._forward(x) for m in models.values()], runs,
                               warmup, 'cpu', 'SeaFormer')
    ms = {name: tuple(t * 1e3 for t in timing) for name, timing in zip(models, timings)}
    base = next(iter(SEAFORMER_BASELINES))
    lines = [f'Segmentors at {shape[0]}x{shape[1]}, batch 1, CPU {torch.get_num_threads()} '
             'threads; median (min-max) ms', '',
             '| model | params (M) | ms | deploy speed-up | vs LR-ASPP |', '|---|---|---|---|---|']
    for name, model in models.items():
        med, lo, hi = ms[name]
        speedup = f'{ms[name[:-len(" deploy")]][0] / med:.2f}x' if name.endswith(' deploy') else ''
        vs_base = f'{ms[base][0] / med:.2f}x' if base in ms else ''
        lines.append(f'| {name} | {_num_params(model) / 1e6:.2f} | {med:.1f} ({lo:.1f}-{hi:.1f}) '
                     f'| {speedup} | {vs_base} |')
    return '\n'.join(lines)


FAMILIES = {'vt-resnet': vt_resnet_family, 'pyramid-tnt': pyramid_tnt_family,
            'seaformer': seaformer_family}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('configs', nargs='*', help='one config, or two to compare')
    parser.add_argument('--model-zoo', metavar='OUT', help='write the model-zoo table')
    parser.add_argument('--only', help='with --model-zoo: models whose name matches this regex')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (torch)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--no-latency', action='store_true')
    parser.add_argument('--count-bn', action='store_true', help='include BatchNorm in FLOPs')
    parser.add_argument('--json', help='also write the rows as JSON')
    parser.add_argument('--verbose', action='store_true',
                        help="also print mmengine's model-initialisation log")
    parser.add_argument('--onnxruntime', action='store_true',
                        help='also time the exported ONNX graph in onnxruntime (CPU); always on '
                        'for --model-zoo unless --no-onnxruntime')
    parser.add_argument('--no-onnxruntime', action='store_true')
    parser.add_argument('--family', choices=sorted(FAMILIES),
                        help="a family against its baseline and the paper's numbers")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_zoo:
        text = write_model_zoo(args.model_zoo, args.only,
                               0 if args.no_latency else args.runs, args.warmup,
                               onnxruntime=not args.no_onnxruntime)
        print(text)
        return text
    if args.family:
        if args.configs:
            parser.error('--family compares a fixed set of models: give no config')
        torch.manual_seed(0)
        options = dict(runs=args.runs, warmup=args.warmup)
        if args.shape and args.family == 'seaformer':
            options['shape'] = tuple(args.shape)
        elif args.shape:
            parser.error(f'--shape: --family {args.family} runs at the paper\'s sizes')
        text = FAMILIES[args.family](**options)
        print(text)
        return text
    if not 1 <= len(args.configs) <= 2:
        parser.error('give one config, or two to compare (or --model-zoo OUT)')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no GPU is available')
    torch.manual_seed(0)
    rows = measure(args.configs, args.shape, args.runs, args.warmup, args.device, args.batch,
                   not args.no_latency, args.count_bn, args.onnxruntime, verbose=args.verbose)
    print(format_rows(rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == '__main__':
    main()
