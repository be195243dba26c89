"""Runner checkpoints load with weights_only=True; anything else pickled is refused."""
import io
import os
import subprocess

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

import vt_mm  # noqa: F401  (allow-lists the checkpoint types)


class _Payload:

    def __reduce__(self):
        return (os.getcwd, ())


def test_message_hub_types_load():
    buf = HistoryBuffer()
    buf.update(1.5)
    ckpt = {'meta': {'iter': 3, 'seed': np.int64(7), 'lr': np.float64(0.1),
                     'hist': buf, 'arr': np.arange(4, dtype=np.float32)},
            'state_dict': {'w': torch.ones(2)}}
    f = io.BytesIO()
    torch.save(ckpt, f)
    f.seek(0)
    loaded = torch.load(f, weights_only=True)
    assert loaded['meta']['hist'].current() == 1.5
    assert loaded['meta']['seed'] == 7 and loaded['meta']['arr'].tolist() == [0, 1, 2, 3]


def test_arbitrary_pickled_object_is_refused():
    f = io.BytesIO()
    torch.save({'state_dict': {}, 'evil': _Payload()}, f)
    f.seek(0)
    with pytest.raises(Exception, match='(?i)weights_only|unsupported global'):
        torch.load(f, weights_only=True)


class _Getattr:

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


def test_getattr_is_limited_to_history_buffer_statistics():
    f = io.BytesIO()
    torch.save({'x': _Getattr()}, f)
    f.seek(0)
    with pytest.raises(Exception, match='only HistoryBuffer statistics methods'):
        torch.load(f, weights_only=True)


def test_converter_refuses_pickles_unless_trusted(tmp_path):
    """The converters' --trust is the only switch to full unpickling (docs/bad_input.md)."""
    from vt_mm.utils.checkpoint import convert_checkpoint_cli
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'args': _Payload()}, src)
    with pytest.raises(RuntimeError, match='rerun with --trust'):
        convert_checkpoint_cli([str(src), str(dst)], 'test', lambda s: s, 'test')
    assert not dst.exists()
    converted = convert_checkpoint_cli([str(src), str(dst), '--trust'], 'test', lambda s: s,
                                       'test')
    assert list(converted) == ['w']
    assert torch.load(dst, weights_only=True)['state_dict']['w'].tolist() == [1.0, 1.0]


class _Call:
    """A pickled call of ``func(*args)``: what a malicious checkpoint carries."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize('payload', [
    _Call(eval, '__import__("os").getcwd()'),
    _Call(exec, 'import os'),
    _Call(os.system, 'true'),
    _Call(getattr, subprocess.Popen, '__init__'),
    _Call(__import__, 'os'),
    _Call(np.load, 'x.npy'),
], ids=['eval', 'exec', 'os.system', 'getattr', '__import__', 'np.load'])
def test_code_running_payloads_are_refused(payload):
    """Guards against a callable that runs code (eval, exec, os.system, a real getattr, ...)
    slipping into SAFE_CHECKPOINT_GLOBALS: such a checkpoint would load under weights_only and
    run its payload."""
    f = io.BytesIO()
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': payload}, f)
    f.seek(0)
    with pytest.raises(Exception, match='(?i)weights_only|unsupported global|only HistoryBuffer'):
        torch.load(f, weights_only=True)


def test_allow_list_holds_only_data_types():
    """Every allow-listed global is a class, or one of numpy's array/scalar reconstructors, or
    the HistoryBuffer-only getattr stand-in: nothing from builtins, os or subprocess."""
    from vt_mm.utils.checkpoint import SAFE_CHECKPOINT_GLOBALS, history_buffer_getattr
    reconstructors = {'_reconstruct', 'scalar'}
    for entry in SAFE_CHECKPOINT_GLOBALS:
        if isinstance(entry, tuple):
            assert entry == (history_buffer_getattr, 'builtins.getattr'), entry
            continue
        if isinstance(entry, type):
            assert entry.__module__.split('.')[0] in ('numpy', 'mmengine'), entry
        else:
            assert entry.__name__ in reconstructors and 'numpy' in entry.__module__, entry


def test_known_mutants_still_apply():
    """tools/analysis_tools/known_mutants.py replaces exact text; a row whose code moved would
    silently stop checking anything. (Running the mutants takes minutes: `make mutation`.)"""
    import os.path as osp
    import sys
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    sys.path.insert(0, osp.join(root, 'tools', 'analysis_tools'))
    try:
        import known_mutants
    finally:
        sys.path.pop(0)
    assert len(known_mutants.MUTANTS) >= 12
    for name, rel, original, mutated, tests in known_mutants.MUTANTS:
        with open(osp.join(root, rel)) as f:
            assert f.read().count(original) == 1, name
        assert original != mutated and osp.isfile(osp.join(root, tests[0])), name
