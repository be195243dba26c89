"""ResNet vs VT-ResNet (18/34/50/101): params, FLOPs and CPU latency at 224x224, side by side.

    python tools/analysis_tools/vt_resnet_benchmark.py [--depths 18 34 50 101] [--runs 10]
        [--threads 2]

Both are ImageNet classifiers (backbone + pooling + 1000-way linear). FLOPs are mmengine.analysis
multiply-adds without BatchNorm, the VT paper's convention (it reports ResNet-50 at 4.089 G; this
count gives 4.087 G). "Last stage" is ResNet's layer4 against the VT modules that replace it; the
paper reports the VT stage 2.4x-6.9x cheaper. Latency: median of --runs forward passes at batch 1
after warm-up, the two models timed alternately in the same run; the table gives their ratio.
"""
import argparse
import sys

import torch
import torch.nn as nn
from mmpretrain.models.backbones import ResNet

from vt_mm.analysis import flop_analyzer, time_alternately
from vt_mm.models.backbones import VTResNet

# depth -> (ResNet GFLOPs, M params), (VT-ResNet GFLOPs, M params, table) as reported
PAPER = {
    18: ((1.814, 11.7), (1.569, 11.7, 'T8')),
    34: ((3.664, 21.8), (3.299, 21.8, 'T2')),
    50: ((4.089, 25.5), (3.412, 21.4, 'T8')),
    101: ((7.802, 44.4), (7.129, 41.5, 'T8')),
}


class Classifier(nn.Module):

    def __init__(self, backbone, last_stage: str):
        super().__init__()
        self.backbone = backbone
        self.last_stage = last_stage
        self.fc = nn.Linear(backbone.feat_dim, 1000)

    def forward(self, x):
        feat = self.backbone(x)[-1]
        return self.fc(feat.flatten(2).mean(dim=2))


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def gmacs(model, x):
    """Total and last-stage GFLOPs (multiply-adds, BatchNorm excluded)."""
    with torch.no_grad():
        analyzer = flop_analyzer(model, (x, ))
        total = analyzer.total() - analyzer.by_operator().get('batch_norm', 0)
        last = analyzer.by_module_and_operator()[f'backbone.{model.last_stage}']
    return total / 1e9, (sum(last.values()) - last.get('batch_norm', 0)) / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--depths', type=int, nargs='+', default=[18, 34, 50, 101])
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    rows = []
    for depth in args.depths:
        resnet = Classifier(ResNet(depth), 'layer4')
        vt = Classifier(VTResNet(depth, out_type='tokens'), 'vt_modules')
        for m in (resnet, vt):
            m.eval()
        (r_total, r_last), (v_total, v_last) = gmacs(resnet, x), gmacs(vt, x)
        print(f'[bench] depth {depth}: timing {args.runs} runs each', file=sys.stderr)
        (r_ms, *_), (v_ms, *_) = time_alternately([lambda: resnet(x), lambda: vt(x)], args.runs,
                                                  2, 'cpu', f'depth {depth}')
        rows.append((depth, _params(resnet) / 1e6, r_total, r_last, r_ms * 1e3,
                     _params(vt) / 1e6, v_total, v_last, v_ms * 1e3))

    print(f'\nImageNet classifiers at 224x224, batch 1, CPU {args.threads} threads, '
          f'torch {torch.__version__}; paper values in brackets\n')
    print('| depth | ResNet params M | VT-ResNet params M | ResNet GFLOPs | VT-ResNet GFLOPs '
          '| last stage GFLOPs ResNet / VT | last-stage ratio | ResNet ms | VT-ResNet ms '
          '| latency ratio |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for d, rp, rt, rl, rms, vp, vt_, vl, vms in rows:
        (prf, prp), (pvf, pvp, table) = PAPER[d]
        print(f'| {d} | {rp:.2f} ({prp}) | {vp:.2f} ({pvp}, {table}) | {rt:.3f} ({prf}) | '
              f'{vt_:.3f} ({pvf}, {table}) | {rl:.3f} / {vl:.3f} | {rl / vl:.1f}x | {rms:.1f} | '
              f'{vms:.1f} | {rms / vms:.2f}x |')
    return rows


if __name__ == '__main__':
    main()
