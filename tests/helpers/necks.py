"""VT-FPN test inputs and small necks (tests/test_models/test_necks, tests/test_tools)."""
import functools

import torch

from vt_mm.models.necks import VTFPN

IN_CHANNELS = [16, 32, 64, 128]


def features(h, w, channels=IN_CHANNELS, n=1, seed=None):
    # ResNet-style strides 4..32 with ceil rounding, as a ResNet produces for odd sizes;
    # seed: a generator of its own (None: the global one)
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    feats = []
    fh, fw = -(-h // 4), -(-w // 4)
    for c in channels:
        feats.append(torch.randn(n, c, fh, fw, generator=gen))
        fh, fw = -(-fh // 2), -(-fw // 2)
    return feats


def small_neck(**kw):
    args = dict(in_channels=IN_CHANNELS, out_channels=32, num_outs=4, num_tokens=4,
                token_channels=64)
    args.update(kw)
    return VTFPN(**args)


def neck(**kw):
    """A small neck, initialised from seed 0, in eval mode."""
    torch.manual_seed(0)
    module = small_neck(**kw)
    module.init_weights()
    return module.eval()


# the contract tests' inputs: the same in every run
level_features = functools.partial(features, seed=0)
