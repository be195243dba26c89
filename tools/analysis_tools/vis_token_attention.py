"""Render which pixels each visual token gathers: the VT tokenizers' spatial attention maps.

    python tools/analysis_tools/vis_token_attention.py CONFIG IMAGE [IMAGE ...]
        [--checkpoint CKPT] [--out attention.png] [--level 0] [--module -1] [--size H W]
        [--stats]

Works for configs with a VT-FPN neck (``--level``: which pyramid level's tokenizer) and for
VT-ResNet backbones (``--module``: which VT module's tokenizer). Writes one image (of the first
IMAGE): the input, then one panel per token with its attention map (softmax over the pixels, so
each map sums to 1) upsampled to the image and overlaid as a heat map, the token's peak marked.

``--stats`` (VT-FPN) prints, per level and averaged over the IMAGEs, what the tokens carry
(:func:`level_statistics`): attention entropy (1 = uniform, every token the image mean),
attention peak x HW, mean cosine similarity between tokens (1 = all the same), the entropy of
the projector's attention over the tokens (1 = every pixel gets the same mix) and the norm the
projector adds relative to the lateral. Collapsed tokens (entropy and similarity near 1) were
the finding of the SGD training-parity rows (benchmarks/reports/training_parity.md).
"""
import argparse
import math
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F

import vt_mm  # noqa: F401
from vt_mm.models.backbones import VTResNet
from vt_mm.models.necks import VTFPN


def load_model(config: str, checkpoint=None):
    from vt_mm.analysis import build_model
    model, cfg, toolbox = build_model(config)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    return model.eval(), cfg, toolbox


def preprocess(model, image_path: str, size):
    import mmcv
    img = mmcv.imread(image_path, channel_order='rgb')
    if img is None:
        raise SystemExit(f'{image_path}: not a readable image')
    if size:
        img = mmcv.imresize(img, (size[1], size[0]))
    pre = model.data_preprocessor
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None]
    mean = getattr(pre, 'mean', None)
    std = getattr(pre, 'std', None)
    if mean is not None:
        x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return img, x


def attention_maps(model, x, level: int, module: int) -> torch.Tensor:
    """(L, h, w) attention of the chosen tokenizer."""
    with torch.no_grad():
        neck = getattr(model, 'neck', None)
        if isinstance(neck, VTFPN):
            maps = neck.attention_maps(model.backbone(x))
            return maps[level][0]
        backbone = getattr(model, 'backbone', model)
        if isinstance(backbone, VTResNet):
            return backbone.attention_maps(x)[module][0]
    raise SystemExit('the model has neither a VTFPN neck nor a VTResNet backbone: no visual '
                     'tokens to show')


def level_statistics(neck: VTFPN, inputs) -> list:
    """What the visual tokens of ``neck`` carry on ``inputs`` (its feature maps), per level
    (means over the batch): a diagnostic for tokens that have collapsed to the image mean.

    * ``attention_entropy``: entropy of each token's spatial attention over log(HW); 1 is
      uniform attention, i.e. every token is the average of all pixels;
    * ``attention_peak``: the largest attention weight times HW (1 = uniform);
    * ``token_similarity``: mean cosine similarity between the tokens of a level (1 = all
      the same token);
    * ``projector_entropy``: entropy of each pixel's attention over the level's tokens,
      over log(L); 1 means every pixel receives the same token mix (global context only);
    * ``projection_ratio``: norm of what the projector adds over the lateral's norm.
    """
    def normalized_entropy(p: torch.Tensor) -> float:
        """Mean entropy of the distributions along the last axis over its maximum."""
        if p.shape[-1] < 2:
            return 1.0
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
        return float(entropy.mean() / math.log(p.shape[-1]))

    laterals = neck.lateral_features(inputs)
    tokens, attns = neck.tokenize(laterals)
    stats = []
    for x, tok, attn, out, proj in zip(laterals, tokens, attns, neck.mix_tokens(tokens),
                                       neck.projectors):
        num = tok.shape[2]
        p = attn.flatten(2)  # N, L, HW
        unit = F.normalize(tok, dim=1)
        sim = unit.transpose(1, 2) @ unit  # N, L, L
        off_diag = (sim.sum((1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(-1)) / max(
            num * (num - 1), 1)
        added = proj(x, out) - x
        stats.append(
            dict(attention_entropy=normalized_entropy(p),
                 attention_peak=float((p.max(-1).values * p.shape[-1]).mean()),
                 token_similarity=float(off_diag.mean()),
                 projector_entropy=normalized_entropy(proj.attention(x, out)),
                 projection_ratio=float((added.flatten(1).norm(dim=1) /
                                         x.flatten(1).norm(dim=1).clamp_min(1e-12)).mean())))
    return stats


def token_statistics(model, images, size):
    """Per-level :func:`level_statistics` averaged over the images."""
    neck = getattr(model, 'neck', None)
    if not isinstance(neck, VTFPN):
        raise SystemExit('--stats needs a model with a VTFPN neck')
    per_image = []
    with torch.no_grad():
        for path in images:
            _, x = preprocess(model, path, size)
            per_image.append(level_statistics(neck, model.backbone(x)))
    return [{key: float(np.mean([stats[level][key] for stats in per_image]))
             for key in per_image[0][level]} for level in range(len(per_image[0]))]


def format_statistics(stats) -> str:
    keys = list(stats[0])
    lines = ['| level | ' + ' | '.join(k.replace('_', ' ') for k in keys) + ' |',
             '|---' * (len(keys) + 1) + '|']
    for level, row in enumerate(stats):
        lines.append(f'| {level} | ' + ' | '.join(f'{row[k]:.3f}' for k in keys) + ' |')
    return '\n'.join(lines)


def render(img: np.ndarray, attn: torch.Tensor, out: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    num = attn.shape[0]
    cols = min(6, num + 1)
    rows = math.ceil((num + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    up = F.interpolate(attn[None], size=img.shape[:2], mode='bilinear', align_corners=False)[0]
    for ax in axes.flat:
        ax.axis('off')
    axes.flat[0].imshow(img)
    axes.flat[0].set_title('input', fontsize=8)
    for t in range(num):
        ax = axes.flat[t + 1]
        a = up[t].numpy()
        ax.imshow(img)
        ax.imshow(a / max(a.max(), 1e-12), cmap='jet', alpha=0.5)
        y, x = np.unravel_index(int(attn[t].argmax()), attn[t].shape)
        sy, sx = img.shape[0] / attn.shape[1], img.shape[1] / attn.shape[2]
        ax.plot((x + 0.5) * sx, (y + 0.5) * sy, 'w+', markersize=8)
        ax.set_title(f'token {t}', fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('image', nargs='+', help='image(s); the attention plot shows the first')
    parser.add_argument('--checkpoint')
    parser.add_argument('--out', default='token_attention.png')
    parser.add_argument('--level', type=int, default=0, help='VT-FPN pyramid level')
    parser.add_argument('--module', type=int, default=-1, help='VT-ResNet module')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'),
                        help='resize the image first (default: as it is)')
    parser.add_argument('--stats', action='store_true',
                        help='print per-level token statistics (VT-FPN) instead of plotting')
    args = parser.parse_args(argv)
    model, cfg, _ = load_model(args.config, args.checkpoint)
    if args.stats:
        stats = token_statistics(model, args.image, args.size)
        print(format_statistics(stats))
        return stats
    img, x = preprocess(model, args.image[0], args.size)
    attn = attention_maps(model, x, args.level, args.module)
    what = f'level {args.level}' if isinstance(getattr(model, 'neck', None), VTFPN) else \
        f'VT module {args.module}'
    render(img, attn, args.out, f'{osp.basename(args.config)}: {what}, {attn.shape[0]} tokens, '
           f'attention {attn.shape[1]}x{attn.shape[2]}')
    print(f'[vis_token_attention] {attn.shape[0]} tokens ({what}) -> {args.out}')
    return attn


if __name__ == '__main__':
    main()
