"""vt_mm/deploy/offline.py: every call the guard patches, refused inside and restored after,
also when the block raises; what counts as this machine, at the boundary."""
import contextlib
import importlib
import os
import socket
import subprocess
import sys

import pytest

from vt_mm.deploy.offline import FORBIDDEN_MODULES, OfflineViolation, _is_local, offline


def _originals():
    return (socket.socket.connect, socket.socket.connect_ex, os.system,
            subprocess.Popen.__init__, list(sys.meta_path))


@pytest.mark.parametrize('address,local', [
    (('127.0.0.1', 80), True), (('127.255.255.254', 80), True), (('::1', 80, 0, 0), True),
    (('localhost', 80), True), (('', 80), True), ('/tmp/socket', True), (b'/tmp/socket', True),
    (('128.0.0.1', 80), False), (('126.255.255.255', 80), False), (('10.0.0.1', 80), False),
    (('::2', 80, 0, 0), False), (('example.com', 443), False), (('0.0.0.0', 80), False)])
def test_what_counts_as_this_machine(address, local):
    assert _is_local(address) is local


@pytest.mark.parametrize('method', ['connect', 'connect_ex'])
def test_both_socket_connects_are_refused_for_remote_addresses(method):
    with offline():
        with socket.socket() as s:
            with pytest.raises(OfflineViolation, match=r"network connection to \('203\.0\.113\.1',"
                               r" 443\) blocked during a conversion: vt-mm deploys offline"):
                getattr(s, method)(('203.0.113.1', 443))


@pytest.mark.parametrize('method', ['connect', 'connect_ex'])
def test_both_socket_connects_reach_loopback(method):
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    try:
        with offline(), socket.socket() as s:
            result = getattr(s, method)(server.getsockname())
            assert result in (None, 0)
    finally:
        server.close()


def test_programs_system_and_shell_are_refused_and_allowed_ones_run_without_pip_or_proxy(
        tmp_path):
    env_dump = tmp_path / 'env.txt'
    env_program = subprocess.run(['which', 'env'], capture_output=True,
                                 text=True).stdout.strip()
    with offline(allowed_programs=[env_program]):
        with pytest.raises(OfflineViolation, match=r"os\.system\('pip install x'\) blocked"):
            os.system('pip install x')
        with pytest.raises(OfflineViolation, match=r"starting \['true'\] blocked during a "
                           r"conversion \(allowed: \['.*env'\]\)"):
            subprocess.run(['true'])
        # an allowed program is still refused through a shell
        with pytest.raises(OfflineViolation, match='blocked'):
            subprocess.run(env_program, shell=True)
        with open(env_dump, 'w') as f:
            subprocess.run([env_program], stdout=f, check=True)
    env = dict(line.split('=', 1) for line in env_dump.read_text().splitlines() if '=' in line)
    assert env['PIP_NO_INDEX'] == '1' and env['PIP_NO_INPUT'] == '1'
    assert env['https_proxy'] == env['http_proxy'] == 'http://0.0.0.0:9'
    assert env['no_proxy'] == ''
    with offline():  # nothing allowed: the message says so
        with pytest.raises(OfflineViolation, match=r'\(allowed: none\)'):
            subprocess.run([env_program])


def test_forbidden_modules_and_their_submodules_only():
    assert set(FORBIDDEN_MODULES) == {'MNN.tools'}
    with offline():
        for name in ('MNN.tools', 'MNN.tools.utils.log'):
            with pytest.raises(OfflineViolation, match=f'import of {name} blocked: importing '
                               'MNN.tools runs'):
                sys.meta_path[0].find_spec(name)
        # a sibling with the same prefix is not the forbidden module
        assert sys.meta_path[0].find_spec('MNN.toolsx') is None
        assert sys.meta_path[0].find_spec('MNN') is None


@pytest.mark.parametrize('raise_inside', [False, True])
def test_everything_is_restored_when_the_guard_ends(raise_inside):
    """Also when the block raises; the exception is not swallowed."""
    before = _originals()
    with pytest.raises(KeyError) if raise_inside else contextlib.nullcontext():
        with offline() as guard:
            assert isinstance(guard, offline)
            assert all(a is not b for a, b in zip(_originals()[:4], before[:4]))
            assert len(sys.meta_path) == len(before[4]) + 1
            if raise_inside:
                raise KeyError('inside')
    after = _originals()
    assert after[:4] == before[:4] and after[4] == before[4]
    assert subprocess.run(['true']).returncode == 0


def test_allowed_programs_keep_the_callers_arguments_and_environment(tmp_path):
    """A program given as one string, positional Popen arguments (stdout here) and the caller's
    env (merged with the offline settings) reach the program unchanged."""
    env_program = subprocess.run(['which', 'env'], capture_output=True,
                                 text=True).stdout.strip()
    out = tmp_path / 'out.txt'
    with offline(allowed_programs=[env_program]):
        with open(out, 'w') as f:
            # Popen(args, bufsize, executable, stdin, stdout): stdout given by position
            subprocess.Popen(env_program, -1, None, None, f,
                             env={'VTMM_MARK': 'kept', 'PATH': '/usr/bin'}).wait()
    lines = out.read_text().splitlines()
    assert 'VTMM_MARK=kept' in lines and 'PIP_NO_INDEX=1' in lines
    assert not any(line.startswith('HOME=') for line in lines)  # the caller's env, not ours


def test_offline_guard_blocks_network_installs_and_programs():
    """What MNN's Python converter does when a package is missing (pip install, then a usage
    log over the network) raises inside the guard that every conversion runs in."""
    with offline():
        with pytest.raises(OfflineViolation, match='network'):
            socket.create_connection(('203.0.113.1', 443), timeout=1)
        with pytest.raises(OfflineViolation, match='os.system'):
            os.system('pip install -U aliyun-log-python-sdk')
        with pytest.raises(OfflineViolation, match='blocked'):
            subprocess.run([sys.executable, '-m', 'pip', 'install', 'x'])
        with pytest.raises(OfflineViolation, match='blocked'):
            os.popen('true')
    # outside the guard nothing is patched
    assert subprocess.run(['true']).returncode == 0


def test_offline_guard_allows_named_programs_and_loopback():
    true = subprocess.run(['which', 'true'], capture_output=True, text=True).stdout.strip()
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    try:
        with offline(allowed_programs=[true]):
            assert subprocess.run([true]).returncode == 0
            socket.create_connection(server.getsockname(), timeout=1).close()
    finally:
        server.close()


def test_mnn_tools_import_is_blocked():
    """Importing MNN.tools runs 'pip install' (MNN 3.x, MNN/tools/utils/log.py); vt-mm calls the
    converter in the _tools extension instead, and the guard refuses the import."""
    pytest.importorskip('MNN')
    sys.modules.pop('MNN.tools', None)
    with offline(), pytest.raises(OfflineViolation, match='MNN.tools'):
        importlib.import_module('MNN.tools')
