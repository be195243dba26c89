"""What tools/train.py and tools/test.py need beyond mmengine's Runner.

mmengine 0.10.7 with torch 2.14 on a CPU-only machine needs a few fixes (see README, "Set-up"):
gloo instead of NCCL for distributed runs, BN instead of SyncBN under CPU DDP, and clear errors
for things the Runner reports badly (missing data, checkpoints that need the network, --amp
without a GPU).
"""
import logging
import os
import os.path as osp
import re
import socket
import sys
import urllib.parse
from typing import Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

# Checkpoint references that mmengine downloads.
_REMOTE_PREFIXES = ('http://', 'https://', 'open-mmlab://', 'openmmlab://', 'torchvision://',
                    'mmcls://', 'mmpretrain://', 'modelzoo://', 'pavi://', 's3://')


class CheckpointUnavailableError(RuntimeError):
    """A config names a checkpoint that is neither local nor downloadable here."""


def load_config(path: str, cfg_options: Optional[dict], launcher: str,
                work_dir: Optional[str]) -> Config:
    """The config as the train/test tools use it: options merged, launcher and work dir set."""
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    toolbox_of(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def toolbox_of(cfg: Config) -> str:
    """'mmseg', 'mmdet' or 'mmpretrain', from the config's default_scope."""
    scope = cfg.get('default_scope', None)
    if scope not in ('mmseg', 'mmdet', 'mmpretrain'):
        raise ValueError(f"config default_scope is {scope!r}; vt-mm's tools handle 'mmseg', "
                         "'mmdet' "
                         "and 'mmpretrain' configs (inherit from one of their base configs)")
    return scope


def _walk(node, path='') -> Iterator[Tuple[str, object, object]]:
    """Yields (dotted path, parent, key) for every entry of nested dicts and lists."""
    if isinstance(node, dict):
        for k, v in node.items():
            p = f'{path}.{k}' if path else str(k)
            yield p, node, k
            yield from _walk(v, p)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            p = f'{path}[{i}]'
            yield p, node, i
            yield from _walk(v, p)


def replace_syncbn(cfg: Config) -> List[str]:
    """Replaces every ``norm_cfg type='SyncBN'`` by 'BN'; returns the paths it changed.

    SyncBN needs CUDA: under CPU DDP it fails, so CPU runs use per-process BN.
    """
    changed = []
    for path, parent, key in list(_walk(cfg._cfg_dict)):
        value = parent[key]
        if isinstance(value, dict) and value.get('type') in ('SyncBN', 'MMSyncBN', 'TorchSyncBN'):
            value['type'] = 'BN'
            changed.append(path)
    return changed


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Makes ``--launcher pytorch`` work without a GPU.

    mmengine's init_dist calls torch.cuda.set_device unconditionally. When no GPU is present we
    initialise the gloo process group from torchrun's environment before the Runner is built, so
    the Runner's setup_env sees an initialised group and skips init_dist; DDP is built without
    device ids, and SyncBN (CUDA only) becomes BN, with a log line saying so.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise RuntimeError(f"--launcher {launcher} on a machine without a GPU is not supported; "
                           "use --launcher pytorch (tools/dist_train.sh, torchrun)")
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg['backend'] = 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    # mmengine's default wrapper passes device_ids=[LOCAL_RANK], which DDP rejects for CPU modules.
    wrapper = cfg.get('model_wrapper_cfg', None) or ConfigDict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    changed = replace_syncbn(cfg)
    if dist.get_rank() == 0:
        print_log('No GPU: env_cfg.dist_cfg.backend = gloo, model_wrapper_cfg.device_ids = None '
                  '(CPU DDP)', logger='current')
        if changed:
            print_log('No GPU: SyncBN is replaced by BN (per-process statistics) at ' +
                      ', '.join(changed), logger='current')


def finish_distributed() -> None:
    """The last call of tools/train.py and tools/test.py: in a distributed run, all ranks meet
    and the process ends here, without the interpreter's teardown; otherwise it does nothing.

    Why not a normal exit (seen in a core dump of an aborted rank, torch 2.14 with gloo): a gloo
    worker thread frees the last collective's work object (a barrier holding the allgather
    before it) after the caller has been released. Freeing it drops references to Python
    tensors, which needs the GIL; when the interpreter is already finalizing, the thread is
    terminated inside a C++ destructor and the process aborts with "terminate called without an
    active exception" (SIGABRT), so torchrun reports a successful job as failed (6 of 20
    two-process runs with OMP_NUM_THREADS=2; destroying the process group first still left
    2 of 10). Everything is written by then (checkpoints, the visualizer closed by the runner's
    after_run); the log handlers and standard streams are flushed before ``os._exit(0)``.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def preflight(*checks) -> None:
    """Runs checks; a missing dataset or checkpoint ends the program with its message only."""
    try:
        for check in checks:
            check()
    except (FileNotFoundError, CheckpointUnavailableError) as e:
        raise SystemExit(f'ERROR: {e}') from None


def check_amp(amp: bool) -> None:
    if amp and not torch.cuda.is_available():
        raise SystemExit('--amp needs a GPU (mmengine AmpOptimWrapper asserts CUDA); this machine '
                         'has none. Run without --amp.')


def _dataset_roots(cfg: Config) -> Iterator[Tuple[str, dict]]:
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name, None)
        if not loader:
            continue
        ds = loader.get('dataset', None)
        while isinstance(ds, dict) and 'dataset' in ds:  # RepeatDataset and friends
            ds = ds['dataset']
        datasets = ds.get('datasets', [ds]) if isinstance(ds, dict) else []
        for d in datasets:
            if isinstance(d, dict):
                yield name, d


def check_data(cfg: Config, dataloaders=('train_dataloader', 'val_dataloader',
                                         'test_dataloader')) -> None:
    """Raises FileNotFoundError naming a missing data root and how to get data."""
    for name, ds in _dataset_roots(cfg):
        if name not in dataloaders:
            continue
        root = ds.get('data_root', None)
        if root and not osp.isdir(root):
            is_lip = 'LIP' in str(ds.get('type', '')) or 'LIP' in root
            hint = ('for synthetic LIP-layout data, run `python tools/dataset_converters/'
                    'make_demo_lip.py --out data/LIP_demo` and point data_root there (or run '
                    '`make demo`)' if is_lip else 'see README, "Data"')
            raise FileNotFoundError(f'{name}: data_root {root!r} does not exist '
                                    f'(dataset {ds.get("type")}). Put the dataset there, point '
                                    f'--cfg-options {name}.dataset.data_root=... at it, or {hint}.')


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


def _cached_path(ref: str) -> Optional[str]:
    """Local file that mmengine would load instead of downloading ``ref``, if present: its URL
    (:func:`remote_url`) in torch hub's checkpoint directory, where mmengine's ``load_url``
    caches downloads (``$TORCH_HOME/hub/checkpoints``)."""
    url = remote_url(ref)
    if url is None:
        return None
    import torch
    name = osp.basename(urllib.parse.urlparse(url).path)
    candidate = osp.join(torch.hub.get_dir(), 'checkpoints', name)
    return candidate if name and osp.isfile(candidate) else None


def _resolves(ref: str) -> bool:
    """Whether mmengine could plausibly download ``ref``: the host of its URL resolves.

    Storage backends vt-mm cannot judge (``pavi://``, ``s3://``) are left to mmengine."""
    if ref.startswith(('pavi://', 's3://')):
        return True
    url = remote_url(ref)
    if url is None:  # a name mmengine's tables do not hold: it would fail too
        return False
    try:
        socket.getaddrinfo(urllib.parse.urlparse(url).hostname, 443)
        return True
    except OSError:
        return False


def checkpoint_refs(cfg: Config) -> List[Tuple[str, str]]:
    """(config path, reference) for every checkpoint the config will load."""
    refs = []
    for path, parent, key in _walk(cfg._cfg_dict):
        value = parent[key]
        if not isinstance(value, str):
            continue
        if key in ('pretrained', 'checkpoint', 'load_from') or (
                isinstance(key, str) and key.endswith('pretrained')):
            refs.append((path, value))
    return refs


def check_checkpoints(cfg: Config) -> None:
    """Fails early, with what to do, when a named checkpoint can be neither found nor fetched."""
    for path, ref in checkpoint_refs(cfg):
        if ref.startswith(_REMOTE_PREFIXES):
            if _cached_path(ref) or _resolves(ref):
                continue
            raise CheckpointUnavailableError(
                f'{path} = {ref!r} needs a download, and this machine cannot reach it (no network, '
                'and not in the torch hub cache). Download the file elsewhere and point the config '
                f'at it: --cfg-options {path}=/path/to/file.pth; or train from scratch: '
                f'--cfg-options {path}=None.')
        elif not osp.isfile(ref):
            raise CheckpointUnavailableError(
                f'{path} = {ref!r}: no such file. Fix the path (--cfg-options '
                f'{path}=/path/to/file.pth)'
                f' or set {path}=None.')


def check_reliability_hooks(cfg) -> List[str]:
    """Logs which of vt-mm's reliability hooks the config does not declare; returns them.

    The hooks are declared by ``configs/_base_/vt_mm_runtime.py``, which every vt-mm config
    inherits, so that the toolboxes' own train tools run them too. This only reports; it
    changes nothing (a config may leave a hook out on purpose).
    """
    from .hooks import RELIABILITY_HOOKS
    present = {h.get('type') for h in (cfg.get('custom_hooks', None) or [])}
    missing = [h['type'] for h in RELIABILITY_HOOKS if h['type'] not in present]
    if missing:
        print_log(f'custom_hooks has no {", ".join(missing)}: exact resume / NaN stop / rank '
                  'check are off for this run; inherit configs/_base_/vt_mm_runtime.py to get '
                  'them', logger='current', level=logging.WARNING)
    return missing


def _num_classes_of_model(model_cfg) -> dict:
    """num_classes of every head in a model config, by config path."""
    found = {}
    for path in ('decode_head', 'auxiliary_head', 'head', 'bbox_head', 'roi_head.bbox_head',
                 'roi_head.mask_head'):
        node = model_cfg
        for part in path.split('.'):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, (list, tuple)):
            node = node[-1] if node else None
        if isinstance(node, dict) and isinstance(node.get('num_classes'), int):
            found[f'model.{path}.num_classes'] = node['num_classes']
    return found


def check_num_classes(cfg, dataset) -> None:
    """The model's heads must have as many classes as the dataset names.

    A mismatch otherwise shows up as a CUDA/CPU "target out of bounds" deep in the loss, or as
    silently wrong metrics.
    """
    metainfo = getattr(dataset, 'metainfo', None) or {}
    classes = metainfo.get('classes')
    if not classes or 'thing_classes' in metainfo:  # panoptic: things/stuff split across heads
        return
    for where, n in _num_classes_of_model(cfg.model).items():
        if n != len(classes):
            raise ValueError(
                f'{where}={n} but the training dataset ({type(dataset).__name__}) has '
                f'{len(classes)} classes {tuple(classes)[:6]}{"..." if len(classes) > 6 else ""}; '
                f'set {where}={len(classes)} or the dataset metainfo')


class DataSampleError(RuntimeError):
    """A dataset sample failed to load; the message names its files."""


def explain_sample_errors(dataset) -> None:
    """Make a failing sample name its files (a corrupt or truncated image, a broken label map).

    mmcv's loaders raise without the path (or with a bare assertion); this wraps the dataset's
    ``prepare_data`` so that any exception is re-raised with the sample index and every
    ``*_path`` of the sample. Works with dataloader workers (Linux fork).
    """
    # unwrap ConcatDataset / RepeatDataset and friends
    inner = [dataset]
    while inner:
        ds = inner.pop()
        for attr in ('dataset', 'datasets'):
            sub = getattr(ds, attr, None)
            if sub is not None:
                inner.extend(sub if isinstance(sub, (list, tuple)) else [sub])
        if not hasattr(ds, 'prepare_data') or getattr(ds, '_vtmm_explained', False):
            continue
        original = ds.prepare_data

        def prepare_data(idx, _ds=ds, _original=original):
            try:
                return _original(idx)
            except DataSampleError:
                raise
            except Exception as e:  # noqa: BLE001 - re-raised with context
                try:
                    info = _ds.get_data_info(idx)
                    files = {k: v for k, v in info.items() if k.endswith('path') and v}
                except Exception:  # noqa: BLE001
                    files = {}
                raise DataSampleError(
                    f'{type(_ds).__name__} sample {idx} could not be loaded: '
                    f'{type(e).__name__}: {e or "(no message)"}; files: {files}. '
                    'Check or replace the file (a truncated download is the usual cause).') from e

        ds.prepare_data = prepare_data
        ds._vtmm_explained = True


class CheckpointMismatchError(RuntimeError):
    """The checkpoint does not fit the model of the config."""


def load_checkpoint_strictly(runner, path: str, max_listed: int = 8) -> None:
    """Load a test checkpoint into the runner's model through mmengine, strictly.

    mmengine's Runner loads ``load_from`` non-strictly and only logs a warning, so a checkpoint
    of another architecture would give a meaningless score. Here the file is read by mmengine's
    ``CheckpointLoader`` (any scheme it supports), compared key by key with the model (the TTA
    wrapper unwrapped, as mmengine does), refused with the first missing, unexpected and
    differently shaped keys listed, and otherwise loaded by ``runner.load_checkpoint(...,
    strict=True)``. The caller leaves ``cfg.load_from`` unset so that nothing loads it twice.
    """
    from mmengine.model import BaseTTAModel, is_model_wrapper
    from mmengine.runner.checkpoint import _load_checkpoint
    checkpoint = _load_checkpoint(path, map_location='cpu')
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}  # as the Runner revises
    model = runner.model
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state)
                    if tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or shapes:

        def listing(keys):
            more = f' ... (+{len(keys) - max_listed} more)' if len(keys) > max_listed else ''
            return ', '.join(keys[:max_listed]) + more

        lines = [f'checkpoint {path} does not fit the model of this config:']
        if missing:
            lines.append(f'  {len(missing)} missing keys: {listing(missing)}')
        if unexpected:
            lines.append(f'  {len(unexpected)} unexpected keys: {listing(unexpected)}')
        if shapes:
            lines.append('  %d keys with other shapes: %s' % (len(shapes), listing(
                [f'{k} {tuple(state[k].shape)} vs {tuple(expected[k])}' for k in shapes])))
        lines.append('Use the checkpoint trained with this config, or convert an official one '
                     'with tools/model_converters/.')
        raise CheckpointMismatchError('\n'.join(lines))
    runner.load_checkpoint(path, map_location='cpu', strict=True)
