"""Reading and loading checkpoints (vt_mm/engine/checkpoints/loading.py): files that are not
checkpoints, no load of NaN/Inf through any mmengine path, strict loading in tools/test.py."""
import re

import pytest
import torch
from helpers.tools import run_python as _run

from vt_mm.engine import checkpoints


def _train(cfg, work, *options, resume=False, expect_ok=True, timeout=600):
    args = ['tools/train.py', cfg, '--work-dir', str(work)]
    args += ['--resume'] if resume else []
    args += ['--cfg-options', *options] if options else []
    return _run(args, expect_ok=expect_ok, timeout=timeout)


# the tiny config's checkpoint hook (every 2 iterations), keeping only the newest checkpoint
KEEP_ONE = 'default_hooks[\'checkpoint\'][\'max_keep_ckpts\'] = 1\n'


def _iters(n):
    return [f'train_cfg.max_iters={n}', f'train_cfg.val_interval={100 + n}']


def _save_fake_checkpoint(path, iteration):
    torch.save({'state_dict': {'w': torch.full((4, ), float(iteration))},
                'meta': {'iter': iteration}}, path)


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


@pytest.mark.parametrize('value', [float('nan'), float('inf'), float('-inf')])
def test_every_mmengine_load_refuses_non_finite_weights(tmp_path, value):
    """mmengine's load_checkpoint (init_cfg=Pretrained, the toolboxes' init_model) and the
    Runner's and inferencers' loads all go through one function that now refuses NaN/Inf
    before copying anything."""
    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import _load_checkpoint_to_model
    model = _tiny_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state['1.running_var'][2] = value
    path = tmp_path / 'bad.pth'
    torch.save({'state_dict': state}, path)
    target = _tiny_model()
    nn_init = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(checkpoints.NonFiniteWeightsError,
                       match=r'^the checkpoint being loaded holds NaN/Inf in 1 tensors '
                             r'\(1\.running_var\); nothing was loaded'):
        load_checkpoint(target, str(path))
    with pytest.raises(checkpoints.NonFiniteWeightsError):
        _load_checkpoint_to_model(target, {'state_dict': state})
    assert all(torch.equal(v, nn_init[k]) for k, v in target.state_dict().items())
    state['1.running_var'][2] = 1.0
    torch.save({'state_dict': state}, path)
    load_checkpoint(target, str(path))  # finite: loads
    assert torch.equal(target[1].running_var, state['1.running_var'])


def test_pretrained_init_cfg_refuses_non_finite_weights(tmp_path):
    from vt_mm.models.backbones import VTResNet
    model = VTResNet(18)
    state = model.state_dict()
    state['layer1.0.conv1.weight'].fill_(float('nan'))
    torch.save({'state_dict': state}, tmp_path / 'nan.pth')
    fresh = VTResNet(18, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'nan.pth')))
    with pytest.raises(checkpoints.NonFiniteWeightsError, match='layer1.0.conv1.weight'):
        fresh.init_weights()


def test_non_finite_tensors_are_listed_in_order_and_only_floats():
    state = {'a': torch.zeros(2), 'b': torch.tensor([1.0, float('nan')]),
             'n': torch.tensor(3), 'c': torch.tensor([float('inf')]), 'd': 'not a tensor',
             'e': torch.tensor([float('-inf')], dtype=torch.float16)}
    assert checkpoints.non_finite_tensors(state) == ['b', 'c', 'e']
    nine = {f'w{i}': torch.tensor([float('nan')]) for i in range(9)}
    with pytest.raises(checkpoints.NonFiniteWeightsError) as info:
        checkpoints.check_finite(nine, 'checkpoint x.pth')
    assert str(info.value).startswith('checkpoint x.pth holds NaN/Inf in 9 tensors (w0, w1, w2, '
                                      'w3, w4, w5, w6, w7 ... (+1 more)); nothing was loaded.')
    checkpoints.check_finite({'a': torch.zeros(1)}, 'x')


def test_files_that_are_not_checkpoints_get_one_message(tmp_path):
    (tmp_path / 'empty.pth').write_bytes(b'')
    (tmp_path / 'page.pth').write_text('<html>404 Not Found</html>')
    torch.save([1, 2], tmp_path / 'list.pth')
    cases = {
        str(tmp_path / 'missing.pth'): 'no such checkpoint file',
        str(tmp_path): 'is a folder, not a checkpoint file',
        str(tmp_path / 'empty.pth'): 'is empty (0 bytes)',
        str(tmp_path / 'page.pth'): 'is not a checkpoint torch can read (',
        str(tmp_path / 'list.pth'): 'holds a list, not a checkpoint',
    }
    for path, message in cases.items():
        with pytest.raises(checkpoints.CheckpointFileError) as info:
            checkpoints.read_checkpoint(path)
        assert str(info.value).startswith(path) and message in str(info.value), path
    _save_fake_checkpoint(tmp_path / 'ok.pth', 3)
    assert checkpoints.read_checkpoint(str(tmp_path / 'ok.pth'))['meta']['iter'] == 3
    assert set(checkpoints.state_dict_of({'state_dict': {'module.a': 1, 'b': 2}})) == {'a', 'b'}
    assert checkpoints.state_dict_of({'w': 1}) == {'w': 1}


@pytest.mark.parametrize('content,message', [
    (None, 'is empty (0 bytes)'), ('text', 'is not a checkpoint torch can read'),
    ('nan', 'holds NaN/Inf in 1 tensors (decode_head.conv_seg.weight)')])
def test_test_tool_refuses_bad_checkpoints_before_any_work(tmp_path, content, message,
                                                           tiny_config):
    """tools/test.py: one line, exit 1, before the data is read or the model is built (the data
    root here does not even exist)."""
    import importlib
    path = tmp_path / 'c.pth'
    if content is None:
        path.write_bytes(b'')
    elif content == 'text':
        path.write_text('not a checkpoint\n')
    else:
        torch.save({'state_dict': {'decode_head.conv_seg.weight': torch.full((2, ), float('nan'))}},
                   path)
    test_tool = importlib.import_module('tools.test')
    with pytest.raises(SystemExit) as info:
        test_tool.main([tiny_config(tmp_path, tmp_path / 'no_data'), str(path)])
    assert str(info.value).startswith(f'ERROR: {path}' if content != 'nan' else
                                      f'ERROR: checkpoint {path}')
    assert message in str(info.value)


def test_the_toolboxes_inferencer_refuses_non_finite_weights(tmp_path, tiny_config, lip_root):
    """A user's own MMSegInferencer(config, weights) gets the refusal too (mmengine's loading
    path), not a silently wrong prediction."""
    from mmseg.apis import MMSegInferencer, init_model
    cfg = tiny_config(tmp_path, lip_root)
    model = init_model(cfg, device='cpu')
    state = model.state_dict()
    state['decode_head.conv_seg.weight'].fill_(float('inf'))
    torch.save({'state_dict': state, 'meta': {}}, tmp_path / 'inf.pth')
    with pytest.raises(checkpoints.NonFiniteWeightsError, match='decode_head.conv_seg.weight'):
        MMSegInferencer(model=cfg, weights=str(tmp_path / 'inf.pth'), device='cpu')
    with pytest.raises(checkpoints.NonFiniteWeightsError):
        init_model(cfg, str(tmp_path / 'inf.pth'), device='cpu')


@pytest.mark.slow
def test_checkpoint_of_another_architecture_is_listed(lip_root, tmp_path, tiny_config):
    from vt_mm.models.backbones import VTResNet
    cfg = tiny_config(tmp_path, lip_root, deterministic=True)
    other = tmp_path / 'vt_resnet18.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in VTResNet(18).state_dict().items()}},
               other)
    code, out = _run(['tools/test.py', cfg, str(other), '--work-dir', str(tmp_path / 't')],
                     expect_ok=False)
    assert code != 0
    assert 'does not fit the model of this config' in out
    assert re.search(r'\d+ missing keys: backbone\.layer4\.', out), out[-3000:]
    assert re.search(r'\d+ unexpected keys: .*backbone\.vt_modules\.', out)


def test_remote_paths_skip_the_local_checks():
    with pytest.raises(checkpoints.CheckpointFileError) as info:
        checkpoints.read_checkpoint('s3://bucket/none.pth')
    assert str(info.value).startswith('s3://bucket/none.pth is not a checkpoint torch can read (')
    assert str(info.value).endswith('; it may be truncated, a text or HTML file saved under a '
                                    '.pth name, or not a PyTorch file')


def test_file_errors_in_full(tmp_path, monkeypatch):
    (tmp_path / 'empty.pth').write_bytes(b'')
    with pytest.raises(checkpoints.CheckpointFileError) as info:
        checkpoints.read_checkpoint(str(tmp_path / 'empty.pth'))
    assert str(info.value) == (f'{tmp_path / "empty.pth"} is empty (0 bytes): a save or '
                               'download that did not finish. Use another checkpoint (--resume '
                               'takes the newest one that loads)')
    torch.save((1, 2), tmp_path / 'tuple.pth')
    with pytest.raises(checkpoints.CheckpointFileError) as info:
        checkpoints.read_checkpoint(str(tmp_path / 'tuple.pth'))
    assert str(info.value) == (f'{tmp_path / "tuple.pth"} holds a tuple, not a checkpoint (a dict '
                               'of weights, or one with a state_dict)')
    from mmengine.runner import checkpoint as mmengine_checkpoint
    calls = []

    def loader(path, map_location=None, logger=None):
        calls.append(map_location)
        raise OSError()

    monkeypatch.setattr(mmengine_checkpoint, '_load_checkpoint', loader)
    torch.save({'w': 1}, tmp_path / 'ok.pth')
    with pytest.raises(checkpoints.CheckpointFileError, match=r'can read \(OSError: no message\)'):
        checkpoints.read_checkpoint(str(tmp_path / 'ok.pth'))
    assert calls == ['cpu']  # read onto the CPU whatever device it was saved from

    def two_lines(path, map_location=None, logger=None):
        raise ValueError('first\nsecond')

    monkeypatch.setattr(mmengine_checkpoint, '_load_checkpoint', two_lines)
    with pytest.raises(checkpoints.CheckpointFileError, match=r'\(ValueError: first\); it may'):
        checkpoints.read_checkpoint(str(tmp_path / 'ok.pth'))


def test_non_finite_message_in_full_and_listing_boundary():
    eight = {f'w{i}': torch.tensor([float('nan')]) for i in range(8)}
    with pytest.raises(checkpoints.NonFiniteWeightsError) as info:
        checkpoints.check_finite(eight, 'checkpoint x')
    assert str(info.value) == (
        'checkpoint x holds NaN/Inf in 8 tensors (w0, w1, w2, w3, w4, w5, w6, w7); nothing was '
        'loaded. These are the weights of a run that diverged: use an earlier checkpoint (the '
        'checkpoint hook refuses to write such weights)')


@pytest.fixture
def loads_wrapped_again(monkeypatch):
    """mmengine's loader as before ``import vt_mm``, then wrapped again in the test
    (import-time code is out of mutation testing's reach otherwise)."""
    from mmengine.runner import checkpoint as mmengine_checkpoint
    wrapped = mmengine_checkpoint.load_state_dict
    monkeypatch.setattr(mmengine_checkpoint, 'load_state_dict', wrapped.__wrapped__)
    checkpoints.refuse_non_finite_loads()
    yield mmengine_checkpoint
    assert mmengine_checkpoint.load_state_dict.__wrapped__ is wrapped.__wrapped__


def test_the_wrapped_loader_passes_everything_through(loads_wrapped_again):
    mmengine_checkpoint = loads_wrapped_again
    wrapper = mmengine_checkpoint.load_state_dict
    assert wrapper._vt_mm_finite is True
    checkpoints.refuse_non_finite_loads()  # again: no second wrapper
    assert mmengine_checkpoint.load_state_dict is wrapper
    model = _tiny_model()
    state = {k: v.clone() + 1 for k, v in model.state_dict().items()
             if k != '1.num_batches_tracked'}
    state['unexpected'] = torch.zeros(1)
    import logging
    logs = []

    class Collect(logging.Handler):

        def emit(self, record):
            logs.append(record.getMessage())

    logger = logging.getLogger('vt_mm_test_loader')
    logger.addHandler(Collect())
    wrapper(model, dict(state), strict=False, logger=logger)  # loads what fits, warns
    assert torch.equal(model[0].weight, state['0.weight'])
    assert logs and 'unexpected' in logs[0]
    with pytest.raises(RuntimeError, match='unexpected'):
        wrapper(_tiny_model(), dict(state), strict=True)
    wrapper(_tiny_model(), dict(state))  # mmengine's default: not strict
    bad = dict(state)
    bad['0.bias'] = torch.full_like(bad['0.bias'], float('nan'))
    with pytest.raises(checkpoints.NonFiniteWeightsError,
                       match='^the checkpoint being loaded holds NaN/Inf in 1 tensors'):
        wrapper(_tiny_model(), bad)


def test_weight_mismatch_lines(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1),
                                torch.nn.Linear(1, 1))
    state = {'0.weight': torch.zeros(4, 2), '0.bias': torch.zeros(4),
             '1.weight': torch.zeros(1, 4), 'x.a': torch.zeros(1), 'x.b': torch.zeros(1),
             'x.c': torch.zeros(1)}
    # every line cut at max_listed
    assert checkpoints.weight_mismatch(state, model, max_listed=2) == [
        '  3 missing keys: 1.bias, 2.bias ... (+1 more)',
        '  3 unexpected keys: x.a, x.b ... (+1 more)',
        '  3 keys with other shapes: 0.bias (4,) vs (3,), 0.weight (4, 2) vs (3, 2) ... (+1 more)']
    assert checkpoints.weight_mismatch(dict(model.state_dict()), model) == []


def test_weight_mismatch_lists_eight_keys_by_default():
    """The default listing: 8 keys whole, the 9th as a count (sorted as strings: 10 < 9)."""
    model = torch.nn.ModuleList([torch.nn.Linear(1, 1, bias=False) for _ in range(11)])
    eight = {f'{i}.weight': torch.zeros(1, 1) for i in range(3)}  # 8 missing
    assert checkpoints.weight_mismatch(eight, model) == [
        '  8 missing keys: 10.weight, 3.weight, 4.weight, 5.weight, 6.weight, 7.weight, '
        '8.weight, 9.weight']
    nine = {f'{i}.weight': torch.zeros(1, 1) for i in range(2)}  # 9 missing
    assert checkpoints.weight_mismatch(nine, model) == [
        '  9 missing keys: 10.weight, 2.weight, 3.weight, 4.weight, 5.weight, 6.weight, '
        '7.weight, 8.weight ... (+1 more)']


def test_strict_loading_compares_with_the_model_inside_a_tta_wrapper(tmp_path):
    from types import SimpleNamespace

    from mmengine.model import BaseTTAModel

    class TTA(BaseTTAModel):

        def merge_preds(self, data_samples_list):
            return data_samples_list

    inner = _tiny_model()
    inner.test_step = lambda data: data  # what a TTA wrapper requires of its model
    torch.save({'state_dict': inner.state_dict()}, tmp_path / 'c.pth')
    loaded = []
    runner = SimpleNamespace(model=TTA(module=inner),
                             load_checkpoint=lambda *a, **k: loaded.append((a, k)))
    checkpoints.load_checkpoint_strictly(runner, str(tmp_path / 'c.pth'))
    assert loaded == [((str(tmp_path / 'c.pth'), ), dict(map_location='cpu', strict=True))]


def _runner_of(model, loaded):
    from types import SimpleNamespace
    return SimpleNamespace(model=model, load_checkpoint=lambda *a, **k: loaded.append((a, k)))


def test_strict_loading_refuses_a_checkpoint_of_another_model_with_one_message(tmp_path):
    model = torch.nn.ModuleList([torch.nn.Linear(1, 1, bias=False) for _ in range(11)])
    path = str(tmp_path / 'other.pth')
    torch.save({'state_dict': {'0.weight': torch.zeros(2, 1), 'extra': torch.zeros(1)}}, path)
    loaded = []
    with pytest.raises(checkpoints.CheckpointMismatchError) as info:
        checkpoints.load_checkpoint_strictly(_runner_of(model, loaded), path)
    assert str(info.value) == (
        f'checkpoint {path} does not fit the model of this config:\n'
        '  10 missing keys: 1.weight, 10.weight, 2.weight, 3.weight, 4.weight, 5.weight, '
        '6.weight, 7.weight ... (+2 more)\n'
        '  1 unexpected keys: extra\n'
        '  1 keys with other shapes: 0.weight (2, 1) vs (1, 1)\n'
        'Use the checkpoint trained with this config, or convert an official one with '
        'tools/model_converters/.')
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r'missing keys: 1.weight, '
                       r'10.weight \.\.\. \(\+8 more\)\n'):
        checkpoints.load_checkpoint_strictly(_runner_of(model, loaded), path, max_listed=2)
    assert loaded == []  # nothing reached the model


def test_strict_loading_refuses_non_finite_weights_naming_the_file(tmp_path):
    model = _tiny_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state['0.bias'][1] = float('inf')
    path = str(tmp_path / 'diverged.pth')
    torch.save({'state_dict': state}, path)
    loaded = []
    with pytest.raises(checkpoints.NonFiniteWeightsError,
                       match=f'^checkpoint {re.escape(path)} holds NaN/Inf in 1 tensors '
                             r'\(0.bias\); nothing was loaded'):
        checkpoints.load_checkpoint_strictly(_runner_of(model, loaded), path)
    assert loaded == []


def test_strict_loading_compares_with_the_model_inside_a_model_wrapper(tmp_path):
    """mmengine's wrappers (DDP, FSDP and any registered in MODEL_WRAPPERS) hold the model in
    ``.module``: the keys compared are the model's, not ``module.``-prefixed ones."""
    from mmengine.registry import MODEL_WRAPPERS

    class Wrapper(torch.nn.Module):

        def __init__(self, module):
            super().__init__()
            self.module = module

    name = 'VtMmTestWrapper'
    MODEL_WRAPPERS.register_module(name=name, module=Wrapper)
    try:
        inner = _tiny_model()
        torch.save({'state_dict': inner.state_dict()}, tmp_path / 'c.pth')
        loaded = []
        checkpoints.load_checkpoint_strictly(_runner_of(Wrapper(inner), loaded),
                                             str(tmp_path / 'c.pth'))
        assert len(loaded) == 1
    finally:
        MODEL_WRAPPERS._module_dict.pop(name)
