"""The checks before a run (vt_mm/engine/preflight.py): one message each."""
import logging
import os

import pytest
import torch
from mmengine.config import Config

from vt_mm.engine import hooks, preflight
from vt_mm.engine.checkpoints import CheckpointUnavailableError
from vt_mm.engine.data_checks import DataCheckError


@pytest.mark.parametrize('error', [FileNotFoundError('no data'),
                                   CheckpointUnavailableError('no data'),
                                   DataCheckError('no data')])
def test_preflight_turns_user_errors_into_one_message(error):
    calls = []

    def failing():
        calls.append('first')
        raise error

    with pytest.raises(SystemExit) as info:
        preflight.preflight(failing, lambda: calls.append('second'))
    assert str(info.value) == 'ERROR: no data' and calls == ['first']


def test_preflight_runs_every_check_in_order_and_lets_bugs_through():
    calls = []
    preflight.preflight(lambda: calls.append(1), lambda: calls.append(2))
    assert calls == [1, 2]
    with pytest.raises(KeyError):
        preflight.preflight(lambda: {}['x'])


def test_amp_check(monkeypatch):
    preflight.check_amp(False)
    with pytest.raises(SystemExit, match=r'^--amp needs a GPU \(mmengine AmpOptimWrapper asserts '
                       r'CUDA\); this machine has none\. Run without --amp\.$'):
        preflight.check_amp(True)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    preflight.check_amp(True)


def test_reliability_hook_audit(monkeypatch):
    logged = []
    monkeypatch.setattr(preflight, 'print_log', lambda msg, **kw: logged.append((msg, kw)))
    full = Config(dict(custom_hooks=[dict(h) for h in hooks.reliability_hooks()]))
    assert preflight.check_reliability_hooks(full) == [] and logged == []
    partial = Config(dict(custom_hooks=[dict(type='ResumeRNGHook'), dict(type='Other')]))
    assert preflight.check_reliability_hooks(partial) == [
        'NonFiniteLossHook', 'RankConsistencyHook', 'CheckpointSafetyHook', 'NetworkCompileHook']
    message, kwargs = logged[0]
    assert message == ('custom_hooks has no NonFiniteLossHook, RankConsistencyHook, '
                       'CheckpointSafetyHook, NetworkCompileHook: exact resume / NaN stop / rank '
                       'check / safe checkpoints are off for this run; inherit '
                       'configs/_base_/vt_mm_runtime.py to get them')
    assert kwargs == dict(logger='current', level=logging.WARNING)
    assert len(preflight.check_reliability_hooks(Config(dict()))) == 5


@pytest.mark.parametrize('work_dir', ['/proc/vt_mm_test', '/dev/null/w'])
def test_unwritable_work_dir_is_refused_at_start(work_dir):
    cfg = Config(dict(work_dir=work_dir))
    with pytest.raises(preflight.UnwritableDirError) as info:
        preflight.check_writable(cfg)
    assert str(info.value).startswith(f'--work-dir {work_dir} cannot be written (')
    assert str(info.value).endswith('give a folder you can write to')


def test_unwritable_message_names_the_error_type_and_reason(tmp_path, monkeypatch):
    """The probe is written in the folder itself (not the current directory), and a refusal
    names the OS error's type and reason."""
    opened = []
    real_open = open

    def refusing_open(path, mode='r', *args, **kwargs):
        opened.append(str(path))
        if 'w' in mode:
            raise PermissionError(13, 'Permission denied')
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr('builtins.open', refusing_open)
    with pytest.raises(preflight.UnwritableDirError) as info:
        preflight.check_writable(Config(dict(work_dir=str(tmp_path / 'w'))))
    assert str(info.value) == (f'--work-dir {tmp_path / "w"} cannot be written (PermissionError: '
                               'Permission denied); give a folder you can write to')
    assert opened == [str(tmp_path / 'w' / f'.vt_mm_write_test.{os.getpid()}')]


def test_unwritable_checkpoint_folder_is_refused_at_start(tmp_path, monkeypatch):
    cfg = Config(dict(work_dir=str(tmp_path / 'w'),
                      default_hooks=dict(checkpoint=dict(out_dir='/proc/vt_mm_ckpt'))))
    with pytest.raises(preflight.UnwritableDirError,
                       match=r'^default_hooks\.checkpoint\.out_dir /proc/vt_mm_ckpt cannot be '
                             r'written'):
        preflight.check_writable(cfg)
    monkeypatch.chdir(tmp_path)
    preflight.check_writable(Config(dict(work_dir=str(tmp_path / 'w'), default_hooks=dict(
        checkpoint=dict(out_dir='s3://bucket/x')))))  # remote: mmengine's backend
    assert os.listdir(tmp_path / 'w') == []  # the probe file is gone
    assert sorted(os.listdir(tmp_path)) == ['w']  # no local 's3:' folder was made


def test_train_tool_refuses_an_unwritable_work_dir_in_one_line(tmp_path, tiny_config):
    import importlib
    train = importlib.import_module('tools.train')
    with pytest.raises(SystemExit, match=r'^ERROR: --work-dir /proc/x cannot be written'):
        train.main([tiny_config(tmp_path, tmp_path / 'data'), '--work-dir', '/proc/x'])
