"""vt_mm/engine/runtime.py and hooks.py in process: config loading, the SyncBN rewrite, CPU DDP
set-up, the preflight funnel, checkpoint references, the hook audit and the hooks' branches."""
import logging
import os
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

import vt_mm  # noqa: F401
from vt_mm.engine import hooks, runtime
from vt_mm.engine.data_checks import DataCheckError

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet', 'mmpretrain'])
def test_toolbox_of_accepts_the_three_toolboxes(scope):
    assert runtime.toolbox_of(Config(dict(default_scope=scope))) == scope


@pytest.mark.parametrize('scope', [None, 'mmcls', 'mmengine', 'MMSEG'])
def test_toolbox_of_refuses_other_scopes(scope):
    with pytest.raises(ValueError, match=rf"^config default_scope is {scope!r}; vt-mm's tools "
                       r"handle 'mmseg', 'mmdet' and 'mmpretrain' configs \(inherit from one of "
                       r'their base configs\)$'):
        runtime.toolbox_of(Config(dict(default_scope=scope) if scope else dict()))


def test_load_config_sets_the_launcher_and_refuses_an_unknown_toolbox(tmp_path):
    cfg = runtime.load_config(osp.join(ROOT, 'configs', 'vtfpn_lip_demo.py'), None, 'pytorch',
                              None)
    assert cfg.launcher == 'pytorch'
    plain = tmp_path / 'plain.py'
    plain.write_text('model = dict(type="X")\n')
    with pytest.raises(ValueError, match='default_scope is None'):
        runtime.load_config(str(plain), None, 'none', None)
    # the toolbox check comes after the options: an option can set it
    cfg = runtime.load_config(str(plain), {'default_scope': 'mmseg'}, 'none', 'w')
    assert cfg.default_scope == 'mmseg' and cfg.work_dir == 'w'


def test_walk_yields_every_path():
    tree = {'a': {'b': [1, {'c': 2}]}, 'd': (3, )}
    assert [p for p, _, _ in runtime._walk(tree)] == ['a', 'a.b', 'a.b[0]', 'a.b[1]',
                                                      'a.b[1].c', 'd', 'd[0]']
    assert all(parent[key] is not None for _, parent, key in runtime._walk(tree))


def test_replace_syncbn_replaces_every_sync_type_and_nothing_else():
    cfg = Config(dict(model=dict(
        backbone=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
        neck=dict(norm_cfg=dict(type='MMSyncBN')),
        heads=[dict(norm_cfg=dict(type='TorchSyncBN')), dict(norm_cfg=dict(type='GN'))],
        other=dict(norm_cfg=dict(type='BN')))))
    changed = runtime.replace_syncbn(cfg)
    assert changed == ['model.backbone.norm_cfg', 'model.neck.norm_cfg',
                       'model.heads[0].norm_cfg']
    assert cfg.model.backbone.norm_cfg == dict(type='BN', requires_grad=True)
    assert cfg.model.neck.norm_cfg.type == 'BN' and cfg.model.heads[0].norm_cfg.type == 'BN'
    assert cfg.model.heads[1].norm_cfg.type == 'GN' and cfg.model.other.norm_cfg.type == 'BN'
    assert runtime.replace_syncbn(cfg) == []


class _FakeDist:

    def __init__(self, initialized=False, rank=0):
        self.initialized, self.rank, self.backends = initialized, rank, []

    def is_initialized(self):
        return self.initialized

    def init_process_group(self, backend):
        self.backends.append(backend)
        self.initialized = True

    def get_rank(self):
        return self.rank


def test_cpu_distributed_set_up(monkeypatch):
    fake = _FakeDist()
    monkeypatch.setattr(runtime, 'dist', fake)
    cfg = Config(dict(model=dict(norm_cfg=dict(type='SyncBN')), find_unused_parameters=True))
    runtime.setup_cpu_distributed(cfg, 'none')
    assert 'env_cfg' not in cfg and fake.backends == []
    runtime.setup_cpu_distributed(cfg, 'pytorch')
    assert fake.backends == ['gloo'] and cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel',
                                         broadcast_buffers=False, find_unused_parameters=True,
                                         device_ids=None)
    assert cfg.model.norm_cfg.type == 'BN'
    # an initialised group is not initialised again; the config's own wrapper is kept
    own = Config(dict(model_wrapper_cfg=dict(type='MyWrapper', device_ids=[0]),
                      env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=5))))
    runtime.setup_cpu_distributed(own, 'pytorch')
    assert fake.backends == ['gloo']
    assert own.model_wrapper_cfg == dict(type='MyWrapper', device_ids=None)
    assert own.env_cfg.dist_cfg == dict(backend='gloo', timeout=5)
    plain = Config(dict())
    runtime.setup_cpu_distributed(plain, 'pytorch')
    assert plain.model_wrapper_cfg.find_unused_parameters is False


@pytest.mark.parametrize('launcher', ['slurm', 'mpi'])
def test_cpu_distributed_needs_torchrun(monkeypatch, launcher):
    monkeypatch.setattr(runtime, 'dist', _FakeDist())
    with pytest.raises(RuntimeError, match=rf'--launcher {launcher} on a machine without a GPU '
                       r'is not supported; use --launcher pytorch'):
        runtime.setup_cpu_distributed(Config(dict()), launcher)


def test_a_gpu_machine_keeps_mmengines_distributed_set_up(monkeypatch):
    monkeypatch.setattr(runtime, 'dist', _FakeDist())
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(model=dict(norm_cfg=dict(type='SyncBN'))))
    runtime.setup_cpu_distributed(cfg, 'slurm')
    assert cfg.model.norm_cfg.type == 'SyncBN' and 'model_wrapper_cfg' not in cfg


def test_distributed_log_lines_only_on_rank_0(monkeypatch):
    logged = []
    monkeypatch.setattr(runtime, 'print_log', lambda msg, **kw: logged.append(msg))
    monkeypatch.setattr(runtime, 'dist', _FakeDist(rank=1))
    runtime.setup_cpu_distributed(Config(dict(norm_cfg=dict(type='SyncBN'))), 'pytorch')
    assert logged == []
    monkeypatch.setattr(runtime, 'dist', _FakeDist(rank=0))
    runtime.setup_cpu_distributed(Config(dict(norm_cfg=dict(type='SyncBN'))), 'pytorch')
    assert logged == ['No GPU: env_cfg.dist_cfg.backend = gloo, model_wrapper_cfg.device_ids = '
                      'None (CPU DDP)', 'No GPU: SyncBN is replaced by BN (per-process '
                      'statistics) at norm_cfg']
    logged.clear()
    runtime.setup_cpu_distributed(Config(dict()), 'pytorch')
    assert len(logged) == 1


def test_finish_distributed_returns_without_a_process_group():
    assert runtime.finish_distributed() is None


@pytest.mark.parametrize('error', [FileNotFoundError('no data'),
                                   runtime.CheckpointUnavailableError('no data'),
                                   DataCheckError('no data')])
def test_preflight_turns_user_errors_into_one_message(error):
    calls = []

    def failing():
        calls.append('first')
        raise error

    with pytest.raises(SystemExit) as info:
        runtime.preflight(failing, lambda: calls.append('second'))
    assert str(info.value) == 'ERROR: no data' and calls == ['first']


def test_preflight_runs_every_check_in_order_and_lets_bugs_through():
    calls = []
    runtime.preflight(lambda: calls.append(1), lambda: calls.append(2))
    assert calls == [1, 2]
    with pytest.raises(KeyError):
        runtime.preflight(lambda: {}['x'])


def test_amp_check(monkeypatch):
    runtime.check_amp(False)
    with pytest.raises(SystemExit, match=r'^--amp needs a GPU \(mmengine AmpOptimWrapper asserts '
                       r'CUDA\); this machine has none\. Run without --amp\.$'):
        runtime.check_amp(True)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    runtime.check_amp(True)


def test_remote_urls_by_mmengines_tables():
    from mmengine.runner import checkpoint as ckpt
    assert runtime.remote_url('https://x/y.pth') == 'https://x/y.pth'
    assert runtime.remote_url('http://x/y.pth') == 'http://x/y.pth'
    assert runtime.remote_url('open-mmlab://resnet50_v1c') == \
        ckpt.get_external_models()['resnet50_v1c']
    assert runtime.remote_url('openmmlab://resnet50_v1c') == \
        ckpt.get_external_models()['resnet50_v1c']
    deprecated, new = next(iter(ckpt.get_deprecated_model_names().items()))
    assert runtime.remote_url(f'open-mmlab://{deprecated}') == ckpt.get_external_models()[new]
    assert runtime.remote_url('torchvision://resnet18') == \
        ckpt.get_torchvision_models()['resnet18']
    assert runtime.remote_url('modelzoo://resnet18') == ckpt.get_torchvision_models()['resnet18']
    name = next(iter(ckpt.get_mmcls_models()))
    assert runtime.remote_url(f'mmcls://{name}') == ckpt.get_mmcls_models()[name]
    for ref in ('open-mmlab://no_such_model', 'torchvision://no_such', 'mmcls://no_such',
                's3://bucket/x.pth', 'pavi://x', 'local.pth'):
        assert runtime.remote_url(ref) is None, ref


def test_cached_checkpoint_is_found_in_the_torch_hub_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    url = runtime.remote_url('torchvision://resnet18')
    assert runtime._cached_path('torchvision://resnet18') is None
    (tmp_path / 'checkpoints').mkdir()
    cached = tmp_path / 'checkpoints' / osp.basename(url)
    cached.write_bytes(b'x')
    assert runtime._cached_path('torchvision://resnet18') == str(cached)
    assert runtime._cached_path('open-mmlab://no_such_model') is None


def test_checkpoint_refs_are_every_weight_the_config_names():
    cfg = Config(dict(load_from='a.pth', model=dict(
        pretrained='b.pth', backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='c.pth')),
        neck=dict(head_pretrained='d.pth', pretrained=None, checkpoint=3),
        heads=[dict(checkpoint='e.pth')])))
    assert runtime.checkpoint_refs(cfg) == [
        ('load_from', 'a.pth'), ('model.pretrained', 'b.pth'),
        ('model.backbone.init_cfg.checkpoint', 'c.pth'), ('model.neck.head_pretrained', 'd.pth'),
        ('model.heads[0].checkpoint', 'e.pth')]


def test_check_checkpoints_messages(tmp_path, monkeypatch):
    local = tmp_path / 'w.pth'
    local.write_bytes(b'x')
    runtime.check_checkpoints(Config(dict(load_from=str(local))))
    with pytest.raises(runtime.CheckpointUnavailableError) as info:
        runtime.check_checkpoints(Config(dict(load_from=str(tmp_path / 'none.pth'))))
    assert str(info.value) == (f"load_from = '{tmp_path / 'none.pth'}': no such file. Fix the path "
                               '(--cfg-options load_from=/path/to/file.pth) or set '
                               'load_from=None.')
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: '/hub')
    with pytest.raises(runtime.CheckpointUnavailableError) as info:
        runtime.check_checkpoints(Config(dict(model=dict(pretrained='https://host/x/w-1.pth'))))
    assert str(info.value) == (
        "model.pretrained = 'https://host/x/w-1.pth' is not on this machine (it downloads from "
        'https://host/x/w-1.pth). Download it where you have network, then put it at '
        '/hub/checkpoints/w-1.pth (where mmengine looks before downloading), or point the config '
        'at the file: --cfg-options model.pretrained=/path/to/file.pth; or train from scratch: '
        '--cfg-options model.pretrained=None.')
    with pytest.raises(runtime.CheckpointUnavailableError) as info:
        runtime.check_checkpoints(Config(dict(model=dict(pretrained='open-mmlab://x'))))
    assert str(info.value).startswith("model.pretrained = 'open-mmlab://x' is not on this machine"
                                      ' (mmengine knows no URL for it). Download it where you '
                                      'have network, then point the config at the file:')
    monkeypatch.setattr(runtime, '_cached_path', lambda ref: '/cache/x.pth')
    runtime.check_checkpoints(Config(dict(model=dict(pretrained='open-mmlab://x'))))


def test_reliability_hook_audit(monkeypatch):
    logged = []
    monkeypatch.setattr(runtime, 'print_log', lambda msg, **kw: logged.append((msg, kw)))
    full = Config(dict(custom_hooks=[dict(h) for h in hooks.RELIABILITY_HOOKS]))
    assert runtime.check_reliability_hooks(full) == [] and logged == []
    partial = Config(dict(custom_hooks=[dict(type='ResumeRNGHook'), dict(type='Other')]))
    assert runtime.check_reliability_hooks(partial) == [
        'NonFiniteLossHook', 'RankConsistencyHook', 'CheckpointSafetyHook', 'NetworkCompileHook']
    message, kwargs = logged[0]
    assert message.startswith('custom_hooks has no NonFiniteLossHook, RankConsistencyHook, '
                              'CheckpointSafetyHook, NetworkCompileHook: ')
    assert kwargs['level'] == logging.WARNING
    assert len(runtime.check_reliability_hooks(Config(dict()))) == 5


def test_reliability_hook_list_is_pinned():
    assert [h['type'] for h in hooks.RELIABILITY_HOOKS] == [
        'ResumeRNGHook', 'NonFiniteLossHook', 'RankConsistencyHook', 'CheckpointSafetyHook',
        'NetworkCompileHook']
    assert (hooks.ResumeRNGHook.priority, hooks.NonFiniteLossHook.priority,
            hooks.RankConsistencyHook.priority, hooks.NetworkCompileHook.priority) == (
                'VERY_LOW', 'ABOVE_NORMAL', 'LOW', 'VERY_HIGH')
    assert hooks.COMPILED_PARTS == ('backbone', 'neck', 'decode_head', 'auxiliary_head', 'head')


# --- hooks ---------------------------------------------------------------------------------


def test_restore_after_skip_restores_exactly_after_the_skipped_batches():
    restored = []
    original = hooks._set_rng_state
    try:
        hooks._set_rng_state = lambda state: restored.append(state)
        wrapped = hooks._RestoreAfterSkip(iter(range(10)), 3, 'state')
        for expected in range(3):
            assert next(wrapped) == expected and restored == []
        assert next(wrapped) == 3 and restored == ['state']
        assert [next(wrapped) for _ in range(3)] == [4, 5, 6] and restored == ['state']
        assert iter(wrapped) is wrapped
        at_once = hooks._RestoreAfterSkip(iter(range(2)), 0, 'now')
        assert next(at_once) == 0 and restored == ['state', 'now']
    finally:
        hooks._set_rng_state = original
    inner = SimpleNamespace(__next__=None, sampler='the sampler')
    assert hooks._RestoreAfterSkip(inner, 1, None).sampler == 'the sampler'


def test_resume_rng_hook_leaves_distributed_runs_and_plain_starts_alone(monkeypatch):
    hook = hooks.ResumeRNGHook()
    checkpoint = {}
    hook.before_save_checkpoint(None, checkpoint)
    assert set(checkpoint['rng_state']) == {'python', 'numpy', 'torch'}
    hook.after_load_checkpoint(None, {})
    assert hook._pending is None
    monkeypatch.setattr(hooks, 'is_distributed', lambda: True)
    hook.after_load_checkpoint(None, checkpoint)
    assert hook._pending is None
    monkeypatch.setattr(hooks, 'is_distributed', lambda: False)
    hook.after_load_checkpoint(None, checkpoint)
    assert hook._pending is checkpoint['rng_state']
    loop = SimpleNamespace(_iter=0, dataloader_iterator=iter([1]))
    hook.before_train(SimpleNamespace(train_loop=loop))
    assert not isinstance(loop.dataloader_iterator, hooks._RestoreAfterSkip)
    assert hook._pending is None
    hook.before_train(SimpleNamespace(train_loop=loop))  # nothing pending: nothing happens


def test_nonfinite_loss_hook_ignores_steps_without_a_loss():
    hook = hooks.NonFiniteLossHook()
    runner = SimpleNamespace(iter=0, epoch=0, work_dir='.')
    hook.after_train_iter(runner, 0, outputs=None)
    hook.after_train_iter(runner, 0, outputs={})
    hook.after_train_iter(runner, 0, outputs=dict(acc=torch.tensor(float('nan'))))
    with pytest.raises(hooks.NonFiniteLossError) as info:
        hook.after_train_iter(runner, 0, outputs=dict(
            loss=torch.tensor([1.0, float('nan')]), loss_a=torch.tensor(2.0),
            acc=torch.tensor(0.5)))
    message = str(info.value)
    assert message.startswith('Loss became non-finite at iteration 1 (epoch 0): loss=nan, '
                              'loss_a=2. Training stopped; last good checkpoint: none yet')
    assert 'acc' not in message


def test_rank_consistency_hook_intervals(monkeypatch):
    checks = []
    hook = hooks.RankConsistencyHook(interval=3)
    monkeypatch.setattr(hook, '_check', lambda runner, where: checks.append(where))
    for i in range(7):
        hook.after_train_iter(SimpleNamespace(iter=i), i)
    assert checks == ['iteration 3', 'iteration 6']
    hook.after_train(None)
    assert checks[-1] == 'end of training'
    never = hooks.RankConsistencyHook()
    assert never.interval == 0
    monkeypatch.setattr(never, '_check', lambda runner, where: checks.append(where))
    for i in range(5):
        never.after_train_iter(SimpleNamespace(iter=i), i)
    assert checks == ['iteration 3', 'iteration 6', 'end of training']


class _Model(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(2, 2)
        self.neck = torch.nn.Linear(2, 2)
        self.head = 'not a module'
        self.loss = torch.nn.Linear(2, 2)


def test_network_compile_hook_compiles_the_networks_once(monkeypatch):
    compiled = []

    def fake_compile(fn, **options):
        compiled.append((fn.__self__, options))

        def wrapper(*a):
            return fn(*a)

        wrapper._torchdynamo_orig_callable = fn
        return wrapper

    monkeypatch.setattr(torch, 'compile', fake_compile)
    logs = []
    model = _Model()
    model.train_step = 'mmengine compiled step'
    runner = SimpleNamespace(cfg=Config(dict(compile=dict(backend='eager'))), model=model,
                             logger=SimpleNamespace(info=logs.append))
    hook = hooks.NetworkCompileHook()
    hook.before_train(runner)
    assert [(m, o) for m, o in compiled] == [(model.backbone, dict(backend='eager')),
                                             (model.neck, dict(backend='eager'))]
    assert 'train_step' not in vars(model)
    assert logs == ["NetworkCompileHook: compiled backbone, neck with {'backend': 'eager'}; the "
                    'train step runs eagerly']
    hook.before_train(runner)  # already compiled: nothing compiled twice
    assert len(compiled) == 2 and logs[-1].startswith('NetworkCompileHook: compiled nothing')
    wrapped = SimpleNamespace(module=_Model())
    runner = SimpleNamespace(cfg=Config(dict(compile=True)), model=wrapped,
                             logger=SimpleNamespace(info=logs.append))
    hook.before_train(runner)
    assert compiled[-1] == (wrapped.module.neck, {}) and 'default options' in logs[-1]
    for off in (None, False):
        before = len(compiled)
        hook.before_train(SimpleNamespace(cfg=Config(dict(compile=off)), model=_Model()))
        assert len(compiled) == before


# --- errors a user meets first: one message each ------------------------------------------


def test_config_syntax_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text("model = dict(\n    type='EncoderDecoder',\n    backbone=dict(type='X'\n")
    with pytest.raises(runtime.ConfigSyntaxError) as info:
        runtime.read_config(str(bad))
    assert str(info.value) == (f"config {bad}, line 3: '(' was never closed:\n"
                               "        backbone=dict(type='X'")
    base = tmp_path / 'base.py'
    base.write_text('x = 1\ny = = 2\n')
    child = tmp_path / 'child.py'
    child.write_text("_base_ = ['./base.py']\nz = 3\n")
    with pytest.raises(runtime.ConfigSyntaxError, match=rf'^config {base}, line 2: invalid '
                       r'syntax:\n    y = = 2$'):
        runtime.read_config(str(child))
    with pytest.raises(runtime.ConfigSyntaxError, match=r'no_such\.py: no such file'):
        runtime.read_config(str(tmp_path / 'no_such.py'))


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_tools_print_config_errors_as_one_line(tool, tmp_path):
    import importlib
    bad = tmp_path / 'bad.py'
    bad.write_text('a = [1,\n')
    module = importlib.import_module(f'tools.{tool}')
    with pytest.raises(SystemExit, match=rf"^ERROR: config {bad}, line 1: '\[' was never "
                       'closed'):
        module.main([str(bad)] + (['ckpt.pth'] if tool == 'test' else []))


@pytest.mark.parametrize('work_dir', ['/proc/vt_mm_test', '/dev/null/w'])
def test_unwritable_work_dir_is_refused_at_start(work_dir):
    cfg = Config(dict(work_dir=work_dir))
    with pytest.raises(runtime.UnwritableDirError) as info:
        runtime.check_writable(cfg)
    assert str(info.value).startswith(f'--work-dir {work_dir} cannot be written (')
    assert str(info.value).endswith('give a folder you can write to')


def test_unwritable_checkpoint_folder_is_refused_at_start(tmp_path):
    cfg = Config(dict(work_dir=str(tmp_path / 'w'),
                      default_hooks=dict(checkpoint=dict(out_dir='/proc/vt_mm_ckpt'))))
    with pytest.raises(runtime.UnwritableDirError,
                       match=r'^default_hooks\.checkpoint\.out_dir /proc/vt_mm_ckpt cannot be '
                             r'written'):
        runtime.check_writable(cfg)
    runtime.check_writable(Config(dict(work_dir=str(tmp_path / 'w'), default_hooks=dict(
        checkpoint=dict(out_dir='s3://bucket/x')))))  # remote: mmengine's backend
    assert os.listdir(tmp_path / 'w') == []  # the probe file is gone


def test_train_tool_refuses_an_unwritable_work_dir_in_one_line(tmp_path, tiny_config):
    import importlib
    train = importlib.import_module('tools.train')
    with pytest.raises(SystemExit, match=r'^ERROR: --work-dir /proc/x cannot be written'):
        train.main([tiny_config(tmp_path, tmp_path / 'data'), '--work-dir', '/proc/x'])


@pytest.mark.parametrize('text,value', [
    ('/data/my dataset', '/data/my dataset'), ('  spaced  ', 'spaced'), ("'quoted x'", 'quoted x'),
    ('1', 1), ('-2.5', -2.5), ('True', True), ('None', None), ('a,b', ['a', 'b']),
    ('[a b, c]', ['a b', 'c']), ('(1, 2)', (1, 2)), ('(1,)', (1, )), ('[]', []),
    ('[[1, 2], (3, x y)]', [[1, 2], (3, 'x y')]), ('1,', [1])])
def test_option_values_keep_their_spaces(text, value):
    assert runtime.parse_option_value(text) == value


def test_option_values_with_unbalanced_brackets_are_refused():
    with pytest.raises(ValueError, match=r"value '\[1, 2' has unbalanced brackets"):
        runtime.parse_option_value('[1, 2')


def test_cfg_options_with_spaces_reach_the_config(tmp_path):
    import importlib
    train = importlib.import_module('tools.train')
    args = train.parse_args([osp.join(ROOT, 'configs', 'vtfpn_lip_demo.py'), '--cfg-options',
                             'train_dataloader.dataset.data_root=/data/my lip',
                             'model.neck.num_tokens=4'])
    cfg = train.build_config(args)
    assert cfg.train_dataloader.dataset.data_root == '/data/my lip'
    assert cfg.model.neck.num_tokens == 4
