"""Checkpoints a config names by reference (``open-mmlab://``, ``torchvision://``, URLs): where
mmengine would find them on this machine, decided from local files only."""
import os.path as osp
import urllib.parse
from typing import List, Optional, Tuple

import torch
from mmengine.config import Config

from ..config import walk_config

__all__ = ['CheckpointUnavailableError', 'remote_url', 'cache_path', 'checkpoint_refs',
           'check_checkpoints']



# Checkpoint references that mmengine downloads.
_REMOTE_PREFIXES = ('http://', 'https://', 'open-mmlab://', 'openmmlab://', 'torchvision://',
                    'mmcls://', 'mmpretrain://', 'modelzoo://', 'pavi://', 's3://')

class CheckpointUnavailableError(RuntimeError):
    """A config names a checkpoint that is neither local nor downloadable here."""

def remote_url(ref: str) -> Optional[str]:
    """The download URL mmengine uses for a checkpoint reference, by mmengine's own tables:
    ``open-mmlab://`` / ``openmmlab://`` (deprecated names mapped as mmengine does),
    ``torchvision://`` / ``modelzoo://``, ``mmcls://`` and plain http(s) URLs; None for a name
    mmengine does not know, or one it stores as a local file."""
    from mmengine.runner import checkpoint as ckpt
    if ref.startswith(('http://', 'https://')):
        return ref
    scheme, _, name = ref.partition('://')
    if scheme in ('open-mmlab', 'openmmlab'):
        name = ckpt.get_deprecated_model_names().get(name, name)
        url = ckpt.get_external_models().get(name)
    elif scheme in ('torchvision', 'modelzoo'):
        url = ckpt.get_torchvision_models().get(name)
    elif scheme == 'mmcls':
        url = ckpt.get_mmcls_models().get(name)
    else:
        return None
    return url if url and url.startswith(('http://', 'https://')) else None

def cache_path(url: str) -> str:
    """Where mmengine's ``load_url`` keeps a download of ``url``:
    ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    name = osp.basename(urllib.parse.urlparse(url).path)
    return osp.join(torch.hub.get_dir(), 'checkpoints', name)

def _cached_path(ref: str) -> Optional[str]:
    """Local file that mmengine would load instead of downloading ``ref``, if present: its URL
    (:func:`remote_url`) in torch hub's checkpoint directory (:func:`cache_path`)."""
    url = remote_url(ref)
    if url is None:
        return None
    candidate = cache_path(url)
    return candidate if osp.basename(candidate) and osp.isfile(candidate) else None

def checkpoint_refs(cfg: Config) -> List[Tuple[str, str]]:
    """(config path, reference) for every checkpoint the config will load."""
    refs = []
    for path, parent, key in walk_config(cfg._cfg_dict):
        value = parent[key]
        if not isinstance(value, str):
            continue
        if key in ('checkpoint', 'load_from') or (
                isinstance(key, str) and key.endswith('pretrained')):  # pretrained, *_pretrained
            refs.append((path, value))
    return refs

def check_checkpoints(cfg: Config) -> None:
    """Fails early, with what to do, when a checkpoint the config names is not on this machine.

    Decided from local files only (vt-mm looks nothing up on the network, not even a host name):
    a remote reference counts when mmengine's download cache (torch hub's ``checkpoints``
    folder) holds it; storage backends vt-mm cannot judge (``pavi://``, ``s3://``) are left to
    mmengine."""
    for path, ref in checkpoint_refs(cfg):
        if ref.startswith(('pavi://', 's3://')):
            continue
        if ref.startswith(_REMOTE_PREFIXES):
            if _cached_path(ref):
                continue
            url = remote_url(ref)
            place = (f'put it at {cache_path(url)} (where mmengine looks before downloading), or '
                     if url else '')
            raise CheckpointUnavailableError(
                f'{path} = {ref!r} is not on this machine'
                + (f' (it downloads from {url})' if url else ' (mmengine knows no URL for it)') +
                f'. Download it where you have network, then {place}point the config at the '
                f'file: --cfg-options {path}=/path/to/file.pth; or train from scratch: '
                f'--cfg-options {path}=None.')
        elif not osp.isfile(ref):
            raise CheckpointUnavailableError(
                f'{path} = {ref!r}: no such file. Fix the path (--cfg-options '
                f'{path}=/path/to/file.pth)'
                f' or set {path}=None.')
