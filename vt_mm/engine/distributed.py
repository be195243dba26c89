"""Distributed training on machines without a GPU: gloo instead of NCCL, BN instead of SyncBN,
DDP without device ids, and a clean end of every rank."""
import logging
import os
import sys
from typing import List

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from .config import walk_config

__all__ = ['replace_syncbn', 'setup_cpu_distributed', 'finish_distributed', 'launch_rank']



def replace_syncbn(cfg: Config) -> List[str]:
    """Replaces every ``norm_cfg type='SyncBN'`` by 'BN'; returns the paths it changed.

    SyncBN needs CUDA: under CPU DDP it fails, so CPU runs use per-process BN.
    """
    changed = []
    for path, parent, key in list(walk_config(cfg._cfg_dict)):
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
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
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


def launch_rank() -> int:
    """This process's global rank as the launcher set it (torchrun, slurm, MPI); 0 when
    launched alone. Known before any process group exists."""
    for name in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK'):
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():  # a rank; '-1' or junk: not one
            return int(value)
    return 0
