"""What tools/train.py and tools/test.py need beyond mmengine's Runner: config loading and
the run's environment.

mmengine 0.10.7 with torch 2.14 on a CPU-only machine needs a few fixes (see README, "Set-up"):
gloo instead of NCCL for distributed runs, BN instead of SyncBN under CPU DDP, and clear errors
for things the Runner reports badly (checkpoints that need the network, --amp without a GPU).
Data checks live in :mod:`vt_mm.engine.data_checks`, checkpoint saving, resuming and strict
loading in :mod:`vt_mm.engine.checkpoints`.
"""
import logging
import os
import os.path as osp
import sys
import urllib.parse
from typing import Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from .data_checks import DataCheckError
from .workdir_lock import WorkDirBusyError

# Checkpoint references that mmengine downloads.
_REMOTE_PREFIXES = ('http://', 'https://', 'open-mmlab://', 'openmmlab://', 'torchvision://',
                    'mmcls://', 'mmpretrain://', 'modelzoo://', 'pavi://', 's3://')


class CheckpointUnavailableError(RuntimeError):
    """A config names a checkpoint that is neither local nor downloadable here."""


class ConfigSyntaxError(ValueError):
    """A config file (or one of its bases) is not valid Python."""


def _first_syntax_error(path: str, seen=None) -> Optional[SyntaxError]:
    """The syntax error in ``path`` or, depth first, in its ``_base_`` files (None if all
    parse), with the file, line and text Python gives."""
    import ast
    seen = set() if seen is None else seen
    if path in seen or not osp.isfile(path):
        return None
    seen.add(path)
    try:
        with open(path, encoding='utf-8') as f:
            ast.parse(f.read(), filename=path)
    except SyntaxError as e:
        return e
    try:
        bases = Config._get_base_files(path)
    except Exception:  # noqa: BLE001 - a base list mmengine cannot read: nothing to follow
        return None
    for base in bases:
        try:
            base_path, _ = Config._get_cfg_path(base, path)
        except Exception:  # noqa: BLE001 - unresolved scopes are reported by mmengine itself
            continue
        if base_path and not osp.isabs(base_path):
            base_path = osp.join(osp.dirname(path), base_path)
        found = _first_syntax_error(osp.normpath(base_path), seen) if base_path else None
        if found is not None:
            return found
    return None


def _syntax_error_in(path: str, error: SyntaxError) -> ConfigSyntaxError:
    """Which file of the config's inheritance holds the error, its line and the line's text.

    mmengine re-raises the parser's error without its position (Python shows
    ``File "<unknown>"``), and for a base file without the file's name; the config and its
    bases are parsed again here to find it."""
    found = _first_syntax_error(path)
    if found is None:
        return ConfigSyntaxError(f'config {path}: {error}')
    text = f':\n    {found.text.rstrip()}' if found.text else ''
    return ConfigSyntaxError(f'config {found.filename}, line {found.lineno}: {found.msg}{text}')


def read_config(path: str) -> Config:
    """``Config.fromfile`` with one clear error for a missing file or a syntax error (file and
    line), instead of a traceback through mmengine."""
    if not osp.isfile(path):
        raise ConfigSyntaxError(f'config {path}: no such file')
    try:
        return Config.fromfile(path)
    except SyntaxError as e:
        raise _syntax_error_in(path, e) from None


def load_config(path: str, cfg_options: Optional[dict], launcher: str,
                work_dir: Optional[str]) -> Config:
    """The config as the train/test tools use it: options merged, launcher and work dir set."""
    cfg = read_config(path)
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
    """Runs checks; missing or bad data or a missing checkpoint ends the program with its
    message only."""
    try:
        for check in checks:
            check()
    except (FileNotFoundError, CheckpointUnavailableError, DataCheckError, ConfigSyntaxError,
            UnwritableDirError, WorkDirBusyError) as e:
        raise SystemExit(f'ERROR: {e}') from None


def preflight_value(make):
    """``make()``, with a config error (missing file, syntax error) ending the program with its
    message only, as :func:`preflight`."""
    try:
        return make()
    except ConfigSyntaxError as e:
        raise SystemExit(f'ERROR: {e}') from None


def check_amp(amp: bool) -> None:
    if amp and not torch.cuda.is_available():
        raise SystemExit('--amp needs a GPU (mmengine AmpOptimWrapper asserts CUDA); this machine '
                         'has none. Run without --amp.')


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
    for path, parent, key in _walk(cfg._cfg_dict):
        value = parent[key]
        if not isinstance(value, str):
            continue
        if key in ('pretrained', 'checkpoint', 'load_from') or (
                isinstance(key, str) and key.endswith('pretrained')):
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
                  'check / safe checkpoints are off for this run; inherit '
                  'configs/_base_/vt_mm_runtime.py to get them', logger='current',
                  level=logging.WARNING)
    return missing


class UnwritableDirError(OSError):
    """A folder a run writes to cannot be created or written."""


def _check_writable(directory: str, what: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
        probe = osp.join(directory, f'.vt_mm_write_test.{os.getpid()}')
        with open(probe, 'wb') as f:
            f.write(b'x')
        os.remove(probe)
    except OSError as e:
        raise UnwritableDirError(
            f'{what} {directory} cannot be written ({type(e).__name__}: {e.strerror or e}); '
            'give a folder you can write to') from None


def check_writable(cfg: Config) -> None:
    """The work dir and a local checkpoint ``out_dir`` can be created and written: checked
    before the run, instead of failing at the first save."""
    _check_writable(cfg.work_dir, '--work-dir')
    checkpoint = (cfg.get('default_hooks', None) or {}).get('checkpoint', None) or {}
    out_dir = checkpoint.get('out_dir', None)
    if out_dir and '://' not in str(out_dir):
        _check_writable(out_dir, 'default_hooks.checkpoint.out_dir')


def _split_top_level(text: str) -> List[str]:
    """``text`` split at the commas outside brackets (a trailing comma ends the list)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in '([':
            depth += 1
        elif char in ')]':
            depth -= 1
        elif char == ',' and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if text[start:].strip() or not parts:
        parts.append(text[start:])
    return parts


def parse_option_value(text: str):
    """One ``--cfg-options`` value: a number, bool, None or string, or a list ``a,b`` / ``[a, b]``
    / tuple ``(a, b)`` of them, as mmengine's ``DictAction`` reads it, except that spaces inside
    a value are kept (``data_root=/data/my dataset``); spaces around brackets and commas are
    layout."""
    from mmengine.config import DictAction
    text = text.strip().strip('\'"')
    if text.count('(') != text.count(')') or text.count('[') != text.count(']'):
        raise ValueError(f'--cfg-options value {text!r} has unbalanced brackets')
    is_tuple = text.startswith('(') and text.endswith(')')
    if is_tuple or (text.startswith('[') and text.endswith(']')):
        inner = text[1:-1].strip()
        values = [parse_option_value(p) for p in _split_top_level(inner)] if inner else []
        return tuple(values) if is_tuple else values
    if ',' in text:
        return [parse_option_value(p) for p in _split_top_level(text)]
    return DictAction._parse_int_float_bool(text)


def _option_action():
    from mmengine.config import DictAction

    class ConfigOptionsAction(DictAction):
        """mmengine's ``DictAction`` for ``--cfg-options`` with :func:`parse_option_value`."""

        @staticmethod
        def _parse_iterable(val: str):
            return parse_option_value(val)

    return ConfigOptionsAction


ConfigOptionsAction = _option_action()
