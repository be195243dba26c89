"""Runner checkpoints load with weights_only=True; anything else pickled is refused."""
import io
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT
from mmengine.logging import HistoryBuffer

import vt_mm  # noqa: F401  (the allow-list is registered here, at import)


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
    from vt_mm.engine.checkpoints.safe_loading import (
        SAFE_CHECKPOINT_GLOBALS,
        history_buffer_getattr,
    )
    reconstructors = {'_reconstruct', 'scalar'}
    for entry in SAFE_CHECKPOINT_GLOBALS:
        if isinstance(entry, tuple):
            assert entry == (history_buffer_getattr, 'builtins.getattr'), entry
            continue
        if isinstance(entry, type):
            assert entry.__module__.split('.')[0] in ('numpy', 'mmengine'), entry
        else:
            assert entry.__name__ in reconstructors and 'numpy' in entry.__module__, entry


FRESH_LOAD = r'''
import sys, torch
import vt_mm  # noqa: F401  (the allow-list is registered here, at import)
ckpt = torch.load(sys.argv[1], weights_only=True)
hub = ckpt['message_hub']['log_scalars']['train/loss']
print('loaded', hub.mean(), hub.min(), hub.max(), hub.current(),
      sorted(str(a.dtype) for a in ckpt['arrays']), ckpt['seed'] + 0)
'''


def test_runner_checkpoint_loads_in_a_fresh_process(tmp_path):
    """In a new interpreter, before any HistoryBuffer exists, a checkpoint with a real
    MessageHub state (HistoryBuffers whose statistics methods pickle as
    ``getattr(HistoryBuffer, 'mean')``), numpy arrays of every dtype and numpy scalars loads
    under weights_only with exactly vt-mm's allow-list (what tools/test.py and --resume do)."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('fresh-load-test')
    for v in (3.0, 1.0, 2.0):
        hub.update_scalar('train/loss', v)
    dtypes = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
              np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)
    path = tmp_path / 'runner.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'message_hub': hub.state_dict(),
                'arrays': [np.zeros(2, dtype=d) for d in dtypes], 'seed': np.int64(7)}, path)
    proc = subprocess.run([sys.executable, '-c', FRESH_LOAD, str(path)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith('loaded 2.0 1.0 3.0 2.0 ') and line.endswith(' 7'), line
    assert all(np.dtype(d).name in line for d in dtypes), line


def test_getattr_stand_in_allows_exactly_the_statistics_methods():
    from vt_mm.engine.checkpoints.safe_loading import history_buffer_getattr
    for name in ('min', 'max', 'mean', 'current'):
        assert history_buffer_getattr(HistoryBuffer, name) is getattr(HistoryBuffer, name)
    with pytest.raises(pickle.UnpicklingError) as info:
        history_buffer_getattr(HistoryBuffer, 'update')
    assert str(info.value) == (
        f"checkpoint asks for getattr({HistoryBuffer!r}, 'update'); only HistoryBuffer "
        'statistics methods are allowed. Refusing to load it: it was not written by an mmengine '
        'Runner.')
    with pytest.raises(pickle.UnpicklingError):
        history_buffer_getattr(np, 'mean')  # the right name on another object


def test_load_checkpoint_file_is_safe_by_default_and_maps_to_the_cpu(tmp_path, monkeypatch):
    from vt_mm.engine.checkpoints import safe_loading as checkpoint
    path = tmp_path / 'official.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'args': _Payload()}, path)
    with pytest.raises(RuntimeError) as info:
        checkpoint.load_checkpoint_file(str(path))  # trust defaults to False
    message = str(info.value)
    assert message.startswith(f'{path} holds pickled objects besides tensors')
    assert ('cannot be loaded safely with weights_only=True. If you trust its source, rerun '
            'with --trust to load it with full unpickling. (Weights only load failed.') in message
    assert '\n' not in message  # only the first line of torch's long explanation
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, 'load', lambda *a, **kw: calls.append(kw) or real_load(*a, **kw))
    assert checkpoint.load_checkpoint_file(str(path), trust=True)['args'] == os.getcwd()
    # a checkpoint saved on a GPU converts on a CPU-only machine
    assert calls == [dict(map_location='cpu', weights_only=False)]


def test_unwrap_state_dict_finds_the_weights_wherever_they_are():
    from vt_mm.engine.checkpoints.safe_loading import unwrap_state_dict
    w, e, m = torch.zeros(1), torch.ones(1), torch.full((1, ), 2.0)
    both = {'state_dict': {'module.a': w}, 'state_dict_ema': {'a': e}, 'model': {'a': m}}
    assert unwrap_state_dict(both)['a'] is w  # prefer_ema defaults to False
    assert unwrap_state_dict(both, prefer_ema=True)['a'] is e
    assert unwrap_state_dict({'model': {'a': m}, 'state_dict_ema': {'a': e}})['a'] is m
    assert unwrap_state_dict({'model': {'a': m}, 'state_dict_ema': {'a': e}},
                             prefer_ema=True)['a'] is e
    assert unwrap_state_dict({'state_dict_ema': {'a': e}})['a'] is e
    assert unwrap_state_dict({'state_dict': {'a': w}, 'model': {'a': m}},
                             prefer_ema=True)['a'] is w  # no EMA: the plain weights
    assert unwrap_state_dict({'model': {'a': m}}, prefer_ema=True)['a'] is m
    # a key that holds no dict is skipped, not taken (the bare state_dict is used instead)
    assert list(unwrap_state_dict({'model': torch.ones(1), 'b': w})) == ['model', 'b']
    assert list(unwrap_state_dict({'module.x.module.y': w})) == ['x.module.y']
    with pytest.raises(TypeError, match=r'^expected a dict checkpoint, got list$'):
        unwrap_state_dict([w])
    for bad in ({}, {'state_dict': {'a': w, 'epoch': 3}}):
        with pytest.raises(ValueError) as info:
            unwrap_state_dict(bad)
        assert str(info.value) == (
            'no state_dict found in the checkpoint (looked for a dict of tensors, or one under '
            "('state_dict', 'model', 'state_dict_ema'))")


@pytest.fixture
def empty_allow_list():
    """torch's weights_only allow-list emptied for one test, vt-mm's put back afterwards (the
    allow-list is registered once, at import, where a mutation run cannot reach it)."""
    from vt_mm.engine.checkpoints.safe_loading import allow_mmengine_checkpoints
    torch.serialization.clear_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    allow_mmengine_checkpoints()


def test_numpy_globals_are_what_arrays_and_scalars_of_every_dtype_need(empty_allow_list):
    from vt_mm.engine.checkpoints.safe_loading import _numpy_globals
    dtypes = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
              np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)
    f = io.BytesIO()
    torch.save({'arrays': [np.ones(2, dtype=d) for d in dtypes], 'scalars': [d(1) for d in dtypes]},
               f)
    f.seek(0)
    with pytest.raises(pickle.UnpicklingError):  # nothing allowed: refused
        torch.load(io.BytesIO(f.getvalue()), weights_only=True)
    with torch.serialization.safe_globals(_numpy_globals()):
        loaded = torch.load(f, weights_only=True)
    assert [a.dtype for a in loaded['arrays']] == [np.dtype(d) for d in dtypes]
    assert [type(s) for s in loaded['scalars']] == list(dtypes)


def test_allow_mmengine_checkpoints_registers_the_whole_list(empty_allow_list):
    from vt_mm.engine.checkpoints.safe_loading import (
        SAFE_CHECKPOINT_GLOBALS,
        allow_mmengine_checkpoints,
    )
    allow_mmengine_checkpoints()
    registered = torch.serialization.get_safe_globals()
    assert len(registered) == len(SAFE_CHECKPOINT_GLOBALS)
    assert all(any(r is g or r == g for r in registered) for g in SAFE_CHECKPOINT_GLOBALS)


def test_getattr_stand_in_works_before_any_history_buffer_exists(monkeypatch):
    """mmengine registers the four statistics methods in HistoryBuffer's ``__init__``: a fresh
    process that loads a checkpoint has none registered yet, so the stand-in names them."""
    from vt_mm.engine.checkpoints.safe_loading import history_buffer_getattr
    monkeypatch.setattr(HistoryBuffer, '_statistics_methods', {})
    for name in ('min', 'max', 'mean', 'current'):
        assert history_buffer_getattr(HistoryBuffer, name) is getattr(HistoryBuffer, name)
    with pytest.raises(pickle.UnpicklingError):
        history_buffer_getattr(HistoryBuffer, 'statistics')


def test_files_that_are_not_checkpoints_are_named_by_what_they_are(tmp_path):
    from vt_mm.engine.checkpoints.safe_loading import load_checkpoint_file
    (tmp_path / 'empty.pth').write_bytes(b'')
    (tmp_path / 'one.pth').write_bytes(b'x')
    (tmp_path / 'page.pth').write_text('<!DOCTYPE html><html>Not Found</html>')
    cases = {
        'missing.pth': f'{tmp_path / "missing.pth"}: no such file',
        '': f'{tmp_path}/ is a folder, not a checkpoint file',
        'empty.pth': f'{tmp_path / "empty.pth"} is empty (0 bytes): a download or save that did '
                     'not finish',
        'one.pth': f"{tmp_path / 'one.pth'} is not a PyTorch checkpoint (it starts with b'x': a "
                   'text or HTML file saved under its name?)',
        'page.pth': f"{tmp_path / 'page.pth'} is not a PyTorch checkpoint (it starts with "
                    "b'<!DOCTYPE html><': a text or HTML file saved under its name?)",
    }
    for name, message in cases.items():
        path = str(tmp_path / name) if name else str(tmp_path) + '/'
        with pytest.raises(RuntimeError) as info:
            load_checkpoint_file(path)
        assert str(info.value) == message, name


def test_legacy_and_truncated_checkpoints(tmp_path):
    from vt_mm.engine.checkpoints.safe_loading import load_checkpoint_file
    legacy = tmp_path / 'legacy.pth'
    torch.save({'w': torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert legacy.read_bytes()[:1] == b'\x80'  # a plain pickle: accepted by the head check
    assert load_checkpoint_file(str(legacy))['w'].tolist() == [1.0, 1.0]
    whole = tmp_path / 'whole.pth'
    torch.save({'w': torch.ones(1000)}, whole)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(whole.read_bytes()[:300])
    with pytest.raises(RuntimeError) as info:
        load_checkpoint_file(str(cut))
    message = str(info.value)
    assert message.startswith(f'{cut} is not a checkpoint torch can read (RuntimeError: ')
    assert message.endswith('); it may be truncated or not a PyTorch file')
    assert '\n' not in message  # the first line of torch's message only


def test_reading_errors_without_a_message(tmp_path, monkeypatch):
    import pickle

    from vt_mm.engine.checkpoints import safe_loading
    path = tmp_path / 'c.pth'
    torch.save({'w': torch.ones(1)}, path)

    def fail(error):
        def load(*args, **kwargs):
            raise error
        return load

    monkeypatch.setattr(safe_loading.torch, 'load', fail(EOFError()))
    with pytest.raises(RuntimeError, match=r'can read \(EOFError: no message\); it may be'):
        safe_loading.load_checkpoint_file(str(path))
    monkeypatch.setattr(safe_loading.torch, 'load', fail(EOFError('first\nsecond')))
    with pytest.raises(RuntimeError, match=r'can read \(EOFError: first\); it may be'):
        safe_loading.load_checkpoint_file(str(path))
    monkeypatch.setattr(safe_loading.torch, 'load', fail(pickle.UnpicklingError()))
    with pytest.raises(RuntimeError, match=r'with full unpickling\. \(\)$'):
        safe_loading.load_checkpoint_file(str(path))
    monkeypatch.setattr(safe_loading.torch, 'load',
                        fail(pickle.UnpicklingError('first\nsecond')))
    with pytest.raises(RuntimeError, match=r'with full unpickling\. \(first\)$'):
        safe_loading.load_checkpoint_file(str(path))
