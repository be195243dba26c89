"""All of vt-mm's checkpoint code: files that survive a kill, a full disk and diverged weights;
a resume that finds them; safe, finite loading; the references a config names; the converters'
command line. One module per job:

* :mod:`.files`: atomic writes, the atomic file backend, leftovers of killed saves;
* :mod:`.saving`: :class:`AtomicCheckpointHook`;
* :mod:`.resuming`: :func:`find_resumable_checkpoint`, :func:`check_resume_fits`,
  :class:`CheckpointSafetyHook`;
* :mod:`.loading`: :func:`read_checkpoint`, finite weights only, :func:`load_checkpoint_strictly`;
* :mod:`.references`: ``open-mmlab://`` and URLs, decided from local files;
* :mod:`.safe_loading`: the ``weights_only`` allow-list;
* :mod:`.conversion`: ``tools/model_converters/*``'s command line.

Why each exists:

mmengine 0.10.7's ``CheckpointHook`` writes ``iter_N.pth`` in place, deletes the oldest kept
checkpoint *before* the new one is written and rewrites ``last_checkpoint`` in place. A SIGKILL
during a save with ``max_keep_ckpts=1`` then leaves a 0-byte newest file and a ``last_checkpoint``
naming a deleted one: nothing to resume from. vt-mm keeps the hook's behaviour and fixes the order:

* :class:`AtomicLocalBackend` (file backend ``'atomic_local'``) writes every file to
  ``.NAME.PID.tmp`` beside it, flushes and fsyncs it, and renames it into place, so a file
  under its final name is always complete. A full disk (checked before writing, and ``ENOSPC`` while
  writing) removes the partial file and raises :class:`CheckpointDiskFullError`: one line with
  the directory, the free space and the checkpoint size.
* :class:`AtomicCheckpointHook` (a ``CheckpointHook``) checks parameters, buffers and optimizer
  state before saving (:class:`NonFiniteWeightsError` instead of a non-finite checkpoint),
  saves through that backend, replaces ``last_checkpoint`` atomically, and only then removes
  the checkpoint that ``max_keep_ckpts`` retires (the previous best one too).
* :class:`CheckpointSafetyHook`, declared in ``configs/_base_/vt_mm_runtime.py``'s
  ``custom_hooks`` (a base config cannot also set ``default_hooks`` beside a toolbox's
  ``default_runtime.py``: mmengine refuses keys defined in two bases), turns the runner's
  ``CheckpointHook`` into an :class:`AtomicCheckpointHook` before training, so the toolboxes' own
  train tools get all of this too; and for ``resume=True`` without a file it picks the newest
  checkpoint in the work dir that loads (:func:`find_resumable_checkpoint`), saying which one and
  why, or warns that training starts from scratch.

Also here: :func:`load_checkpoint_strictly`, the one way vt-mm's test tool loads a checkpoint.
"""
from .conversion import convert_checkpoint_cli
from .files import (
                    AtomicLocalBackend,
                    CheckpointDiskFullError,
                    atomic_write,
                    last_good_checkpoint,
                    remove_partial_files,
                    temporary_path,
)
from .loading import (
                    CheckpointFileError,
                    CheckpointMismatchError,
                    NonFiniteWeightsError,
                    check_finite,
                    load_checkpoint_strictly,
                    non_finite_tensors,
                    read_checkpoint,
                    refuse_non_finite_loads,
                    state_dict_of,
                    weight_mismatch,
)
from .references import (
                    CheckpointUnavailableError,
                    cache_path,
                    check_checkpoints,
                    checkpoint_refs,
                    remote_url,
)
from .resuming import CheckpointSafetyHook, check_resume_fits, find_resumable_checkpoint
from .safe_loading import (
                    SAFE_CHECKPOINT_GLOBALS,
                    allow_mmengine_checkpoints,
                    load_checkpoint_file,
                    unwrap_state_dict,
)
from .saving import AtomicCheckpointHook, non_finite_state

__all__ = [
    'AtomicLocalBackend', 'AtomicCheckpointHook', 'CheckpointSafetyHook',
    'CheckpointDiskFullError', 'NonFiniteWeightsError', 'CheckpointMismatchError',
    'CheckpointFileError', 'CheckpointUnavailableError', 'atomic_write', 'temporary_path',
    'remove_partial_files', 'last_good_checkpoint', 'find_resumable_checkpoint',
    'check_resume_fits', 'non_finite_state', 'read_checkpoint', 'state_dict_of',
    'non_finite_tensors', 'check_finite', 'weight_mismatch', 'load_checkpoint_strictly',
    'refuse_non_finite_loads', 'remote_url', 'cache_path', 'checkpoint_refs',
    'check_checkpoints', 'SAFE_CHECKPOINT_GLOBALS', 'allow_mmengine_checkpoints',
    'load_checkpoint_file', 'unwrap_state_dict', 'convert_checkpoint_cli'
]

# torch's weights_only loading accepts mmengine's checkpoints; mmengine loads refuse NaN/Inf
allow_mmengine_checkpoints()
refuse_non_finite_loads()
