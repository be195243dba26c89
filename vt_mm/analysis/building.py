"""Models for analysis and deployment, built from a config without a checkpoint: the model,
its default input size, and trained-like BatchNorm statistics for benchmarks."""
import contextlib
import logging
import os.path as osp
from typing import Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ..engine.config import toolbox_of, walk_config
from ..engine.distributed import replace_syncbn

__all__ = ['build_model', 'default_shape', 'resolve_config_path', 'trained_like_bn',
           'quiet_mmengine_logs']


def resolve_config_path(config: str) -> str:
    """The file of a config given as a path or as ``scope::path/in/package.py`` (``mmseg::``,
    ``vt_mm::``, ...), resolved where ``_base_`` resolves it: a package's ``.mim/configs``,
    and for ``vt_mm::`` in a clone without an install, the repository's configs/.

    Example:
        >>> resolve_config_path('vt_mm::demo/vtfpn_r50_lip-demo-128x128.py').endswith(
        ...     'configs/demo/vtfpn_r50_lip-demo-128x128.py')
        True
    """
    if '::' in config:
        import importlib
        pkg, rel = config.split('::', 1)
        if pkg == 'vt_mm':
            from vt_mm.utils.config_scope import configs_root
            return osp.join(configs_root(), rel)
        module = importlib.import_module(pkg)
        return osp.join(osp.dirname(module.__file__), '.mim', 'configs', rel)
    return config


@contextlib.contextmanager
def quiet_mmengine_logs(verbose: bool = False):
    """mmengine's INFO lines (one per parameter from ``init_weights``: ~1000 for a detector)
    held back while a model is built, so that a tool prints its result; warnings still show."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_model(config: str, verbose: bool = False) -> Tuple[nn.Module, Config, str]:
    """(model, config, toolbox) of a config (path or ``mmseg::...``): the model freshly
    initialised (no checkpoint is downloaded, SyncBN as BN), in eval mode; mmengine's
    initialisation log (one line per parameter) only with ``verbose``.

    Example:
        >>> model, cfg, toolbox = build_model('configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py')
    """
    with quiet_mmengine_logs(verbose):
        return _build_model(config)


def _build_model(config: str) -> Tuple[nn.Module, Config, str]:
    cfg = Config.fromfile(resolve_config_path(config))
    toolbox = toolbox_of(cfg)
    replace_syncbn(cfg)
    # benchmark a freshly initialised network: nothing is downloaded
    if cfg.model.get('pretrained'):
        cfg.model.pretrained = None
    for _, parent, key in list(walk_config(cfg.model)):
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


def trained_like_bn(model: nn.Module, affine: bool = True) -> nn.Module:
    """BatchNorm with non-trivial statistics and, with ``affine``, affine terms (seed 0), in
    place.

    Freshly built models are degenerate where it matters for deployment: ResNet's last BN of
    every residual branch (``zero_init_residual``) and SeaFormer's attention projections start
    with gamma 0, so a converter that folds constants (litert-torch) removes those branches and
    a latency measured on them is of a smaller network (VT-ResNet-18 in TFLite: 3 of its 15
    convolutions left). Latency benchmarks and export tests run on these weights instead; an
    export that got BN wrong (training mode, dropped) cannot pass on them either.

    Gammas that start at zero get small values, U(0.05, 0.15), the others U(0.8, 1.2): a zero
    gamma marks a residual branch meant to start near identity, and giving every such branch a
    gain near 1 made random deep networks blow up their activations (SeaFormer-B/L, VT-ResNet-50)
    until fp32 rounding alone exceeded the runtimes' 1e-4 parity check. Small but non-zero keeps
    every branch in the graph and the activations in the range trained weights have.
    """
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 0.4 + 0.8)
            if affine and m.affine:
                was_zero = m.weight.data == 0
                gain = torch.rand(n, generator=gen) * 0.4 + 0.8
                small = torch.rand(n, generator=gen) * 0.1 + 0.05
                m.weight.data.copy_(torch.where(was_zero, small, gain))
                m.bias.data.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
    return model


def default_shape(cfg: Config, toolbox: str) -> Tuple[int, int]:
    if toolbox == 'mmseg':
        size = cfg.get('crop_size')
        return tuple(size) if size else (512, 512)
    if toolbox == 'mmdet':
        return (800, 1333)
    for step in cfg.get('test_pipeline') or cfg.test_dataloader.dataset.get('pipeline', []):
        if step.get('type') == 'CenterCrop':
            crop = step['crop_size']
            return (crop, crop) if isinstance(crop, int) else tuple(crop)[::-1]
    return (224, 224)
