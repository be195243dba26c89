"""The contract every vt-mm backbone follows (VTResNet, PyramidTNT, SeaFormer).

Written once here, as mmpretrain's and mmseg's backbones do it:

* ``arch``: a variant name looked up in the class's ``arch_zoo`` (named dicts), with one alias
  scheme for all families (``t``/``ti`` = tiny, ``s`` = small, ``m`` = medium, ``b`` = base,
  ``l`` = large), or a dict with the table's keys; unknown names raise :class:`UnknownArchError`
  listing the valid ones;
* ``pretrained``: the deprecated mmseg/mmdet style, turned into
  ``init_cfg=dict(type='Pretrained', checkpoint=...)`` with a warning (mmseg's
  ``EncoderDecoder`` passes ``pretrained`` to every backbone);
* ``frozen_stages`` / ``norm_eval``: each backbone lists what its first stages are
  (:meth:`BackboneContract._frozen_parts`); freezing and the ``train()`` override are here;
* ``train()`` returns ``self``, so ``model = build(...).eval()`` works (mmpretrain's
  ``ResNet.train`` returns None);
* ``attention_maps(x)``: the attention weights a backbone computes, one name across vt-mm
  (VT-FPN's neck uses it too). A backbone lists its attention modules
  (:meth:`BackboneContract._attention_modules`); each calls :func:`record_attention` with its
  softmax weights, which are kept only while ``attention_maps`` runs.
"""
import warnings
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

# one alias scheme for every family's variant names
ARCH_ALIASES = {'t': 'tiny', 'ti': 'tiny', 's': 'small', 'm': 'medium', 'b': 'base', 'l': 'large'}


class UnknownArchError(KeyError, ValueError):
    """An ``arch`` (or ResNet ``depth``) that a backbone's variant table does not hold."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ''


def resolve_arch(owner: str, arch: Union[str, int, Mapping], table: Mapping[Any, dict],
                 required: Optional[set] = None, what: str = 'arch',
                 allow_dict: bool = True) -> dict:
    """The variant settings (a new dict) for ``arch``: a name (or alias) in ``table``, or a
    custom dict holding at least ``required`` (default: the keys of the table's first entry).
    ``what`` names the argument in messages (VTResNet's variants are keyed by ``depth``, which
    cannot be a dict: ``allow_dict=False``)."""
    if isinstance(arch, Mapping) and allow_dict:
        required = set(next(iter(table.values()))) if required is None else set(required)
        missing = required - set(arch)
        if missing:
            raise UnknownArchError(f'{owner}: a custom {what} dict is missing {sorted(missing)}; '
                                   f'it needs {sorted(required)}')
        return dict(arch)
    key = ARCH_ALIASES.get(arch.lower(), arch.lower()) if isinstance(arch, str) else arch
    try:
        known = key in table
    except TypeError:  # an unhashable value (a dict where a depth is expected)
        known = False
    if not known:
        names = sorted(table, key=lambda k: (isinstance(k, str), k))
        aliases = sorted(a for a, name in ARCH_ALIASES.items() if name in table)
        raise UnknownArchError(f'{owner}: unknown {what} {arch!r}; choose one of {names}'
                               + (f' (aliases {aliases})' if aliases else '') +
                               (', or pass a dict with the same keys' if allow_dict else ''))
    return dict(table[key])


def pretrained_to_init_cfg(owner: str, pretrained: Optional[str], init_cfg):
    """mmseg's deprecated ``pretrained=...`` as ``init_cfg=dict(type='Pretrained', ...)``."""
    if pretrained is None:
        return init_cfg
    if init_cfg is not None:
        raise ValueError(f'{owner}: give either pretrained or init_cfg, not both (pretrained is '
                         'deprecated: use init_cfg=dict(type="Pretrained", checkpoint=...))')
    if not isinstance(pretrained, str):
        raise TypeError(f'{owner}: pretrained must be a checkpoint path or URL, got '
                        f'{type(pretrained).__name__}')
    # a UserWarning, as mmseg's backbones (a DeprecationWarning is hidden by default)
    warnings.warn(f'DeprecationWarning: {owner}: pretrained is deprecated, use '
                  'init_cfg=dict(type="Pretrained", checkpoint=...)')
    return dict(type='Pretrained', checkpoint=pretrained)


def recording_attention(module: nn.Module) -> bool:
    """Whether ``attention_maps`` is collecting this module's weights (then a fused kernel that
    hides them must take its explicit path)."""
    return getattr(module, '_attention_store', None) is not None


def record_attention(module: nn.Module, weights) -> None:
    """Keeps an attention module's softmax weights while ``attention_maps`` runs; else a no-op."""
    store = getattr(module, '_attention_store', None)
    if store is not None:
        store.append(weights.detach() if isinstance(weights, Tensor) else tuple(
            w.detach() for w in weights))


class BackboneContract:
    """Mixin placed first in a backbone's bases (before mmpretrain's ``BaseBackbone`` or
    ``ResNet``): freezing, ``norm_eval`` and ``train()`` for every vt-mm backbone.

    A backbone sets ``self.frozen_stages`` and ``self.norm_eval`` and implements
    :meth:`_frozen_parts`.
    """

    arch_zoo: Dict[Any, dict] = {}

    def _frozen_parts(self) -> List[Union[nn.Module, nn.Parameter]]:
        """Modules and parameters that ``frozen_stages`` freezes (may be called while the
        backbone is still being built: list only what exists)."""
        raise NotImplementedError

    def _attention_modules(self) -> List[nn.Module]:
        """The modules whose weights :meth:`attention_maps` returns, in forward order."""
        raise NotImplementedError(f'{type(self).__name__} has no attention maps to show')

    def attention_maps(self, x: Tensor) -> List:
        """The attention weights of every attention module for images ``x``, in forward order
        (what each entry holds is in the backbone's docstring). Runs one forward pass without
        autograd; fused attention kernels take their explicit path for it."""
        modules = self._attention_modules()
        maps: List = []
        for m in modules:
            m._attention_store = maps
        try:
            with torch.no_grad():
                self.forward(x)
        finally:
            for m in modules:
                m._attention_store = None
        return maps

    def _freeze_stages(self) -> None:
        if getattr(self, 'frozen_stages', -1) < 0:
            return
        for part in self._frozen_parts():
            if isinstance(part, nn.Parameter):
                part.requires_grad = False
                continue
            part.eval()
            for param in part.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and getattr(self, 'norm_eval', False):
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
