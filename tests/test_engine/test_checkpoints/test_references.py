"""Checkpoints named by reference (vt_mm/engine/checkpoints/references.py), decided without the
network."""
import importlib
import os.path as osp

import pytest
import torch
from helpers import VTFPN_LIP
from mmengine.config import Config

from vt_mm.engine.checkpoints import references
from vt_mm.engine.config import read_config


def test_remote_urls_by_mmengines_tables():
    from mmengine.runner import checkpoint as ckpt
    assert references.remote_url('https://x/y.pth') == 'https://x/y.pth'
    assert references.remote_url('http://x/y.pth') == 'http://x/y.pth'
    assert references.remote_url('open-mmlab://resnet50_v1c') == \
        ckpt.get_external_models()['resnet50_v1c']
    assert references.remote_url('openmmlab://resnet50_v1c') == \
        ckpt.get_external_models()['resnet50_v1c']
    deprecated, new = next(iter(ckpt.get_deprecated_model_names().items()))
    assert references.remote_url(f'open-mmlab://{deprecated}') == ckpt.get_external_models()[new]
    assert references.remote_url('torchvision://resnet18') == \
        ckpt.get_torchvision_models()['resnet18']
    assert references.remote_url('modelzoo://resnet18') == ckpt.get_torchvision_models()['resnet18']
    name = next(iter(ckpt.get_mmcls_models()))
    assert references.remote_url(f'mmcls://{name}') == ckpt.get_mmcls_models()[name]
    for ref in ('open-mmlab://no_such_model', 'torchvision://no_such', 'mmcls://no_such',
                's3://bucket/x.pth', 'pavi://x', 'local.pth'):
        assert references.remote_url(ref) is None, ref


def test_table_entries_that_are_not_urls_are_not_remote(monkeypatch):
    """mmengine's tables may name a file under its home instead of a URL (it loads those
    locally): only http:// and https:// entries are downloads."""
    from mmengine.runner import checkpoint as ckpt
    monkeypatch.setattr(ckpt, 'get_external_models', lambda: {
        'web': 'http://host/web.pth', 'secure': 'https://host/secure.pth',
        'home': 'checkpoints/home.pth'})
    monkeypatch.setattr(ckpt, 'get_deprecated_model_names', lambda: {})
    assert references.remote_url('open-mmlab://web') == 'http://host/web.pth'
    assert references.remote_url('open-mmlab://secure') == 'https://host/secure.pth'
    assert references.remote_url('open-mmlab://home') is None
    # the name is everything after the first '://'
    monkeypatch.setattr(ckpt, 'get_torchvision_models', lambda: {'a://b': 'https://h/ab.pth'})
    assert references.remote_url('torchvision://a://b') == 'https://h/ab.pth'


def test_cached_checkpoint_is_found_in_the_torch_hub_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    url = references.remote_url('torchvision://resnet18')
    assert references._cached_path('torchvision://resnet18') is None
    (tmp_path / 'checkpoints').mkdir()
    cached = tmp_path / 'checkpoints' / osp.basename(url)
    cached.write_bytes(b'x')
    assert references._cached_path('torchvision://resnet18') == str(cached)
    assert references._cached_path('open-mmlab://no_such_model') is None


def test_checkpoint_refs_are_every_weight_the_config_names():
    cfg = Config(dict(load_from='a.pth', model=dict(
        pretrained='b.pth', backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='c.pth')),
        neck=dict(head_pretrained='d.pth', pretrained=None, checkpoint=3),
        heads=[dict(checkpoint='e.pth')])))
    assert references.checkpoint_refs(cfg) == [
        ('load_from', 'a.pth'), ('model.pretrained', 'b.pth'),
        ('model.backbone.init_cfg.checkpoint', 'c.pth'), ('model.neck.head_pretrained', 'd.pth'),
        ('model.heads[0].checkpoint', 'e.pth')]


def test_check_checkpoints_messages(tmp_path, monkeypatch):
    local = tmp_path / 'w.pth'
    local.write_bytes(b'x')
    references.check_checkpoints(Config(dict(load_from=str(local))))
    with pytest.raises(references.CheckpointUnavailableError) as info:
        references.check_checkpoints(Config(dict(load_from=str(tmp_path / 'none.pth'))))
    assert str(info.value) == (f"load_from = '{tmp_path / 'none.pth'}': no such file. Fix the path "
                               '(--cfg-options load_from=/path/to/file.pth) or set '
                               'load_from=None.')
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: '/hub')
    with pytest.raises(references.CheckpointUnavailableError) as info:
        references.check_checkpoints(Config(dict(model=dict(pretrained='https://host/x/w-1.pth'))))
    assert str(info.value) == (
        "model.pretrained = 'https://host/x/w-1.pth' is not on this machine (it downloads from "
        'https://host/x/w-1.pth). Download it where you have network, then put it at '
        '/hub/checkpoints/w-1.pth (where mmengine looks before downloading), or point the config '
        'at the file: --cfg-options model.pretrained=/path/to/file.pth; or train from scratch: '
        '--cfg-options model.pretrained=None.')
    with pytest.raises(references.CheckpointUnavailableError) as info:
        references.check_checkpoints(Config(dict(model=dict(pretrained='open-mmlab://x'))))
    assert str(info.value).startswith("model.pretrained = 'open-mmlab://x' is not on this machine"
                                      ' (mmengine knows no URL for it). Download it where you '
                                      'have network, then point the config at the file:')
    monkeypatch.setattr(references, '_cached_path', lambda ref: '/cache/x.pth')
    references.check_checkpoints(Config(dict(model=dict(pretrained='open-mmlab://x'))))


@pytest.mark.parametrize('first', ['s3://bucket/a.pth', 'pavi://a', 'open-mmlab://cached'])
def test_a_reference_that_passes_does_not_end_the_check(tmp_path, monkeypatch, first):
    """A reference left to mmengine (s3, pavi) or found in the cache is skipped; the ones after
    it are still checked."""
    monkeypatch.setattr(references, '_cached_path',
                        lambda ref: '/cache/a.pth' if ref == 'open-mmlab://cached' else None)
    cfg = Config(dict(model=dict(pretrained=first), load_from=str(tmp_path / 'none.pth')))
    with pytest.raises(references.CheckpointUnavailableError, match='^load_from = '):
        references.check_checkpoints(cfg)


@pytest.fixture
def no_network(monkeypatch):
    """Every name lookup and connection fails the test: vt-mm decides from local files only."""
    import socket
    attempts = []

    def refuse(name):
        def blocked(*args, **kwargs):
            attempts.append((name, args))
            raise AssertionError(f'network access at run time: socket.{name}{args}')
        return blocked

    for name in ('getaddrinfo', 'gethostbyname', 'gethostbyname_ex', 'create_connection'):
        monkeypatch.setattr(socket, name, refuse(name))
    monkeypatch.setattr(socket.socket, 'connect', lambda self, address: refuse('connect')(address))
    yield attempts
    assert attempts == []


def test_remote_pretrained_weights_are_judged_without_the_network(lip_root, tmp_path,
                                                                  monkeypatch, no_network):
    """configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py names mmseg's ImageNet ResNet-50
    (open-mmlab://): with no cached
    copy, tools/train.py stops in its preflight saying where to put the file, and looks up no
    host name on the way (it used to resolve download.openmmlab.com to decide what to say)."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    from vt_mm.engine.checkpoints import references
    train = importlib.import_module('tools.train')
    roots = [f'{split}_dataloader.dataset.data_root={lip_root}' for split in ('train', 'val')]
    with pytest.raises(SystemExit) as info:
        train.main([VTFPN_LIP, '--work-dir',
                    str(tmp_path / 'w'), '--cfg-options'] + roots)
    message = str(info.value)
    url = references.remote_url('open-mmlab://resnet50_v1c')
    assert message.startswith("ERROR: model.pretrained = 'open-mmlab://resnet50_v1c' is not on "
                              f'this machine (it downloads from {url}).')
    assert str(tmp_path / 'torch' / 'hub' / 'checkpoints' / osp.basename(url)) in message
    assert '--cfg-options model.pretrained=/path/to/file.pth' in message
    cfg = read_config(VTFPN_LIP)
    cfg.model.pretrained = str(tmp_path / 'missing.pth')
    with pytest.raises(references.CheckpointUnavailableError, match='no such file'):
        references.check_checkpoints(cfg)
    cfg.model.pretrained = None
    references.check_checkpoints(cfg)
    for ref in ('s3://bucket/w.pth', 'pavi://w'):  # left to mmengine's storage backends
        references.check_checkpoints(Config(dict(load_from=ref)))


def test_warm_torch_hub_cache_satisfies_the_preflight(tmp_path, monkeypatch, no_network):
    """Offline, a checkpoint mmengine would take from torch hub's cache passes the preflight,
    for every scheme mmengine resolves (open-mmlab:// used to map to no file)."""
    import torch
    from mmengine.config import Config

    from vt_mm.engine.checkpoints import references
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    refs = {
        'open-mmlab://resnet50_v1c': 'resnet50_v1c-2cccc1ad.pth',
        'torchvision://resnet50': 'resnet50-0676ba61.pth',
        'https://example.org/weights/model-123.pth': 'model-123.pth',
    }
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    assert torch.hub.get_dir() == str(tmp_path / 'torch' / 'hub')
    for ref, name in refs.items():
        cfg = Config(dict(model=dict(pretrained=ref)))
        with pytest.raises(references.CheckpointUnavailableError,
                           match=f'put it at {cache / name} '):
            references.check_checkpoints(cfg)  # cold cache: refused with the way out
        cache.mkdir(parents=True, exist_ok=True)
        (cache / name).write_bytes(b'x')
        assert references._cached_path(ref) == str(cache / name)
        references.check_checkpoints(cfg)  # warm cache: mmengine would load it, so no error
    with pytest.raises(references.CheckpointUnavailableError, match='mmengine knows no URL for it'):
        references.check_checkpoints(Config(dict(load_from='open-mmlab://no_such_model')))
