"""Where a runtime loses time on PyramidTNT: each part of one TNT block, converted alone.

    python benchmarks/deploy_block_profile.py [--config CONFIG] [--shape 192 192]
        [--stage 0] [--backends onnxruntime ncnn] [--runs 30] [--out-dir DIR]

ncnn runs PyramidTNT-Ti 3-4x slower than onnxruntime while it matches it on the other families
(benchmarks/reports/deployment.md). This tool exports each part of the first block of a stage (word
attention, word MLP, word LayerNorm, word-to-sentence projection, sentence attention, sentence
MLP) on its own at the shapes it has in the model at ``--shape``, plus the word attention's
batched score product alone, converts each through vt-mm's backends and times them
alternately in one run (median ms, one thread). Prints a table with each backend's ratio to
the first backend.
"""
import argparse
import os
import os.path as osp
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn

from vt_mm.analysis import build_model, time_alternately, trained_like_bn
from vt_mm.deploy.backends import get_backend
from vt_mm.deploy.backends.base import ConversionJob
from vt_mm.deploy.offline import offline
from vt_mm.deploy.onnx import simplify_onnx
from vt_mm.models.backbones.pyramid_tnt import WORDS_SIDE

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


class Part(nn.Module):
    """One part of a block, fed a 4-D input (what every converter takes) reshaped inside."""

    def __init__(self, fn, shape, modules):
        super().__init__()
        self.fn, self.shape = fn, shape
        self.parts = nn.ModuleList(modules)  # so that their weights are the graph's initialisers

    def forward(self, x):
        return self.fn(x.reshape(self.shape))


def stage_inputs(backbone, shape, stage):
    """The words, sentences and grid size entering ``stage``'s first block for a random
    image."""
    with torch.no_grad():
        words, sentences, hw = backbone.embed(torch.randn(1, 3, *shape))
        for s in backbone.stages[:stage]:
            words, sentences, hw = s(words, sentences, hw)
        if hasattr(backbone.stages[stage], 'word_merge'):
            words = backbone.stages[stage].word_merge(words, hw)
            sentences, hw = backbone.stages[stage].sentence_merge(sentences, hw)
    return words, sentences, hw


def block_parts(backbone, shape, stage):
    words, sentences, hw = stage_inputs(backbone, shape, stage)
    blk = backbone.stages[stage].blocks[0]
    if not blk.with_words:
        raise SystemExit(f'stage {stage} has no word attention; choose another --stage')
    bias = backbone.stages[stage].relative_bias(hw)
    n, per, wd = sw = tuple(words.shape)
    _, ns, d = sentences.shape
    att = blk.word_attn

    def scores(t):  # the word attention's batched q @ k^T alone
        kv = att.kv(t)
        return att.q(t) @ kv[..., :wd].transpose(1, 2)

    return [
        ('word attention', lambda t: att(t, (WORDS_SIDE, WORDS_SIDE)), sw, [att]),
        ('  its q @ k^T alone', scores, sw, [att]),
        ('word MLP', blk.word_mlp, sw, [blk.word_mlp]),
        ('word LayerNorm', lambda t: blk.word_norm1(t.reshape(1, n, per * wd)), sw,
         [blk.word_norm1]),
        ('word -> sentence projection',
         lambda t: blk.word_proj_norm2(blk.word_proj(blk.word_proj_norm1(t.reshape(1, n, -1)))),
         sw, [blk.word_proj_norm1, blk.word_proj, blk.word_proj_norm2]),
        ('sentence attention', lambda t: blk.attn(blk.norm1(t), hw, bias), (1, ns, d),
         [blk.norm1, blk.attn]),
        ('sentence MLP', lambda t: blk.mlp(blk.norm2(t)), (1, ns, d), [blk.norm2, blk.mlp]),
    ]


def convert_part(stem, part, shape, backends, out_dir):
    part = part.eval()
    x = torch.randn(1, *shape)  # 4-D: (1, words-batch, 16, dim) or (1, 1, tokens, dim)
    path = osp.join(out_dir, stem + '.onnx')
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        expected = part(x)
        torch.onnx.export(part, (x, ), path, input_names=['input'], output_names=['output'],
                          opset_version=17, dynamo=False)
    simplify_onnx(path)
    job = ConversionJob(onnx_path=path, net=part, example=x.numpy(), output_names=['output'],
                        output_shapes=[tuple(expected.shape)], out_dir=out_dir, stem=stem,
                        expected=[expected.numpy()])
    runners = []
    for name_ in backends:
        backend = get_backend(name_)
        with offline(allowed_programs=backend.programs()):
            files = backend.convert(job)
        run = backend.load(files, job, num_threads=1)
        diff = float(np.abs(run(job.example)[0].reshape(expected.shape) - expected.numpy()).max())
        runners.append((run, diff))
    return job, runners


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=osp.join(ROOT, 'configs', 'pyramid_tnt',
                                                     'pyramid-tnt-ti_8xb128_in1k.py'))
    parser.add_argument('--shape', nargs=2, type=int, default=[192, 192])
    parser.add_argument('--stage', type=int, default=0)
    parser.add_argument('--backends', nargs='+', default=['onnxruntime', 'ncnn'])
    parser.add_argument('--runs', type=int, default=30)
    parser.add_argument('--out-dir', default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, _, _ = build_model(args.config)
    backbone = trained_like_bn(model).backbone.eval()  # no zero BN gammas to fold away
    for p in backbone.parameters():
        p.requires_grad_(False)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix='block_profile_')
    os.makedirs(out_dir, exist_ok=True)
    print(f'{osp.basename(args.config)} at {args.shape[0]}x{args.shape[1]}, stage '
          f'{args.stage} block 0, one thread, median of {args.runs} alternated runs\n')
    print('| part | input | ' + ' | '.join(f'{b} ms' for b in args.backends) + ' |')
    print('|---|---|' + '---|' * len(args.backends))
    for i, (name, fn, shape, modules) in enumerate(
            block_parts(backbone, tuple(args.shape), args.stage)):
        job, runners = convert_part(f'part{i}', Part(fn, shape, modules), shape, args.backends,
                                    out_dir)
        med = [1e3 * t[0] for t in time_alternately(
            [lambda run=run: run(job.example) for run, _ in runners], runs=args.runs, warmup=1,
            device='cpu', label=name)]
        cells = [f'{m:.3f}' + ('' if j == 0 else f' ({m / med[0]:.1f}x)')
                 + (f' OFF by {d:.1e}' if d > 1e-4 else '')
                 for j, (m, (_, d)) in enumerate(zip(med, runners))]
        print(f'| {name} | {"x".join(map(str, shape))} | ' + ' | '.join(cells) + ' |',
              flush=True)

if __name__ == '__main__':
    main()
