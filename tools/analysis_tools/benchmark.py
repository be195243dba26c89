"""Params, FLOPs and latency of any vt-mm (mmseg / mmdet / mmpretrain) config; optionally two
configs side by side.

    python tools/analysis_tools/benchmark.py CONFIG [CONFIG_B] [--shape H W] [--runs 10]
        [--warmup 2] [--threads 2] [--device cpu|cuda] [--batch 1] [--no-latency] [--json FILE]
    python tools/analysis_tools/benchmark.py --model-zoo docs/model_zoo.md [--only REGEX]
        [--runs 3] [--threads 2]

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

Input size: ``--shape``, else the config's ``crop_size`` (mmseg), 800x1333 (mmdet) or the test
crop (mmpretrain). Works on CPU-only machines and mmengine 0.10.x, where mmseg's get_flops and
mmdet's benchmark tools do not.
"""
import argparse
import json
import math
import os.path as osp
import statistics
import sys
import time
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from mmengine.analysis import FlopAnalyzer  # noqa: E402
from mmengine.analysis.jit_handles import get_shape  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import vt_mm  # noqa: E402,F401
from vt_mm.engine import runtime  # noqa: E402


def sdpa_flop_jit(inputs, outputs) -> int:
    """q (.., Nq, d) @ k^T (.., d, Nk), then attn (.., Nq, Nk) @ v (.., Nk, dv)."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def baddbmm_flop_jit(inputs, outputs) -> int:
    a, b = get_shape(inputs[1]), get_shape(inputs[2])
    return a[0] * a[1] * a[2] * b[2]


def resolve_config_path(config: str) -> str:
    """Accepts 'mmseg::path/in/package.py' as well as file paths."""
    if '::' in config:
        import importlib
        pkg, rel = config.split('::', 1)
        module = importlib.import_module(pkg)
        return osp.join(osp.dirname(module.__file__), '.mim', 'configs', rel)
    return config


def build_model(config: str) -> Tuple[nn.Module, Config, str]:
    cfg = Config.fromfile(resolve_config_path(config))
    toolbox = runtime.toolbox_of(cfg)
    runtime.replace_syncbn(cfg)
    # benchmark a freshly initialised network: nothing is downloaded
    if cfg.model.get('pretrained'):
        cfg.model.pretrained = None
    for _, parent, key in list(runtime._walk(cfg.model)):
        value = parent[key]
        if key == 'init_cfg' and isinstance(value, dict) and value.get('type') == 'Pretrained':
            parent[key] = None
    init_default_scope(toolbox)
    registry = {
        'mmseg': 'mmseg.registry',
        'mmdet': 'mmdet.registry',
        'mmpretrain': 'mmpretrain.registry'
    }[toolbox]
    import importlib
    models = importlib.import_module(registry).MODELS
    model = models.build(cfg.model)
    model.init_weights()
    model.eval()
    return model, cfg, toolbox


def default_shape(cfg: Config, toolbox: str) -> Tuple[int, int]:
    if toolbox == 'mmseg':
        size = cfg.get('crop_size', None)
        return tuple(size) if size else (512, 512)
    if toolbox == 'mmdet':
        return (800, 1333)
    for step in cfg.get('test_pipeline', None) or cfg.test_dataloader.dataset.get('pipeline', []):
        if step.get('type') == 'CenterCrop':
            crop = step['crop_size']
            return (crop, crop) if isinstance(crop, int) else tuple(crop)[::-1]
    return (224, 224)


class NetworkForward(nn.Module):
    """Normalised images -> raw network outputs, for every toolbox."""

    def __init__(self, model: nn.Module, toolbox: str):
        super().__init__()
        self.model, self.toolbox = model, toolbox

    def forward(self, x):
        if self.toolbox == 'mmpretrain':
            return self.model(x, mode='tensor')
        if self.toolbox == 'mmdet':  # two-stage detectors need the image metadata
            from mmdet.structures import DetDataSample
            shape = tuple(x.shape[2:])
            samples = [
                DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                                            batch_input_shape=shape, scale_factor=(1.0, 1.0)))
                for _ in range(x.shape[0])
            ]
            return self.model._forward(x, samples)
        return self.model._forward(x)


def count_flops(net: nn.Module, x: torch.Tensor, count_bn: bool = False) -> Tuple[int, List[str]]:
    analyzer = FlopAnalyzer(net, (x, ))
    analyzer.set_op_handle(**{
        'aten::scaled_dot_product_attention': sdpa_flop_jit,
        'aten::baddbmm': baddbmm_flop_jit,
        'aten::baddbmm_': baddbmm_flop_jit,  # VT-FPN accumulates in place when not training
    })
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        total = analyzer.total()
        if not count_bn:  # set_op_handle(..., None) does not remove a default handle
            total -= analyzer.by_operator().get('batch_norm', 0)
    skipped = sorted(analyzer.unsupported_ops().keys())
    return total, skipped


def time_alternately(fns: List, runs: int, warmup: int, device: str, label: str = '',
                     grad: bool = False) -> List[Tuple[float, float, float]]:
    """(median, min, max) seconds per callable, the callables timed in alternation.

    Without autograd unless ``grad`` (to time training steps)."""
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    times: List[List[float]] = [[] for _ in fns]
    with torch.set_grad_enabled(grad):
        for _ in range(warmup):
            for fn in fns:
                fn()
        sync()
        started = time.perf_counter()
        for r in range(runs):
            for i, fn in enumerate(fns):
                t0 = time.perf_counter()
                fn()
                sync()
                times[i].append(time.perf_counter() - t0)
            if time.perf_counter() - started > 5:  # progress on long runs
                print(f'[benchmark] {label} run {r + 1}/{runs}', file=sys.stderr, flush=True)
    return [(statistics.median(t), min(t), max(t)) for t in times]


def measure(configs: List[str], shape: Optional[Tuple[int, int]] = None, runs: int = 10,
            warmup: int = 2, device: str = 'cpu', batch: int = 1, latency: bool = True,
            count_bn: bool = False) -> List[Dict]:
    rows, fns = [], []
    for config in configs:
        model, cfg, toolbox = build_model(config)
        hw = tuple(shape) if shape else default_shape(cfg, toolbox)
        divisor = getattr(model.data_preprocessor, 'pad_size_divisor', 1) or 1
        hw = tuple(-(-v // divisor) * divisor for v in hw)  # as the preprocessor pads batches
        net = NetworkForward(model, toolbox).to(device)
        x = torch.randn(batch, 3, *hw, device=device)
        flops, skipped = count_flops(net, x[:1], count_bn)
        rows.append(dict(config=config, toolbox=toolbox, shape=list(hw),
                         params=sum(p.numel() for p in model.parameters()), flops=flops,
                         uncounted_ops=skipped))
        fns.append(lambda net=net, x=x: net(x))
    if latency:
        label = ' vs '.join(osp.basename(c) for c in configs)
        for row, (med, lo, hi) in zip(rows, time_alternately(fns, runs, warmup, device, label)):
            row.update(latency_ms=med * 1e3, latency_min_ms=lo * 1e3, latency_max_ms=hi * 1e3,
                       images_per_s=batch / med, device=device, batch=batch,
                       threads=torch.get_num_threads() if device == 'cpu' else None)
    return rows


def format_rows(rows: List[Dict]) -> str:
    lines = ['| config | input | params (M) | GFLOPs | latency ms (min-max) | images/s |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lat = (f"{r['latency_ms']:.1f} ({r['latency_min_ms']:.1f}-{r['latency_max_ms']:.1f})"
               if 'latency_ms' in r else '-')
        ips = f"{r['images_per_s']:.2f}" if 'images_per_s' in r else '-'
        lines.append(f"| {r['config']} | {r['shape'][0]}x{r['shape'][1]} | "
                     f"{r['params'] / 1e6:.2f} | {r['flops'] / 1e9:.3f} | {lat} | {ips} |")
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


def write_model_zoo(out: str, only: Optional[str] = None, runs: int = 3, warmup: int = 1) -> str:
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
                            latency=runs > 0)
        except Exception as e:  # noqa: BLE001 - one failing model must not lose the table
            print(f'[benchmark] {m["Name"]} failed: {type(e).__name__}: {e}', file=sys.stderr)
            rows.append(f"| {m['Name']} | - | - | - | - | - | - | - | measurement failed: "
                        f"{type(e).__name__} | - |")
            continue
        result = ', '.join(f'{k} {v}' for res in m.get('Results', []) or []
                           for k, v in res['Metrics'].items()) or '-'
        dataset = ', '.join(res['Dataset'] for res in m.get('Results', []) or []) or \
            meta.get('Training Data', '-')
        paper = m['collection'].get('Paper', {})
        source = f"[{m.get('Note', paper.get('Title', ''))}]({paper.get('URL', '')})"
        paper_flops = f"{meta['FLOPs'] / 1e9:.3f}" if 'FLOPs' in meta else '-'
        lat = f"{r['latency_ms']:.0f}" if 'latency_ms' in r else '-'
        rows.append(f"| {m['Name']} | {dataset} | {r['shape'][0]}x{r['shape'][1]} | "
                    f"{r['params'] / 1e6:.2f} | {_params_verdict(r['params'], meta)} | "
                    f"{r['flops'] / 1e9:.3f} | {paper_flops} | {lat} | {result} | {source} |")
    header = [
        '# Model zoo',
        '',
        'Generated by `python tools/analysis_tools/benchmark.py --model-zoo docs/model_zoo.md`',
        'from model-index.yml. vt-mm ships configs, not trained weights: the results column is',
        'what the papers report for these configs (source linked); params, FLOPs and latency are',
        'measured on the models these configs build. FLOPs: multiply-adds without BatchNorm, fused',
        f'attention counted (GFLOPs). Latency: batch 1, median of {runs} runs on the CPU',
        f'({torch.get_num_threads()} threads, torch {torch.__version__}), image to raw head',
        'outputs (detectors: before the final NMS; two-stage RoI heads run on the RPN\'s 1000',
        'proposals, which dominates their FLOPs). "Params vs official" compares with the',
        'authors\' model where one exists, else with the paper\'s rounded figure.',
        '',
        '| model | data | input HxW | params (M) | params vs official | GFLOPs | paper GFLOPs '
        '| CPU ms | paper result | source |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    if only and osp.isfile(out):  # update these rows of an existing table, keep the others
        fresh = {r.split(' | ')[0]: r for r in rows}
        kept = [line for line in open(out).read().splitlines() if line.startswith('| ') and
                not line.startswith('| model |') and line.split(' | ')[0] not in fresh]
        order = {m['Name']: i for i, m in enumerate(load_model_index())}
        rows = sorted(kept + rows, key=lambda r: order.get(r.split(' | ')[0][2:], 1e9))
    text = '\n'.join(header + rows) + '\n'
    with open(out, 'w') as f:
        f.write(text)
    return text


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
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_zoo:
        text = write_model_zoo(args.model_zoo, args.only,
                               0 if args.no_latency else args.runs, args.warmup)
        print(text)
        return text
    if not 1 <= len(args.configs) <= 2:
        parser.error('give one config, or two to compare (or --model-zoo OUT)')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no GPU is available')
    torch.manual_seed(0)
    rows = measure(args.configs, args.shape, args.runs, args.warmup, args.device, args.batch,
                   not args.no_latency, args.count_bn)
    print(format_rows(rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == '__main__':
    main()
