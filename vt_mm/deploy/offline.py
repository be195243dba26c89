"""A guard that keeps third-party converters offline: no network, no package installs.

Converters have been seen to do both at run time: importing ``MNN.tools`` installs a logging
package through pip and then posts a usage log with a machine id; onnx2tf downloads a
calibration file; OpenVINO's ``convert_model`` has telemetry (its package is imported by
``import openvino``, so only the network is blocked for it). vt-mm calls
each converter so that none of this is reached (``docs/en/user_guides/deployment.md``) and
runs every conversion inside :func:`offline`, which turns any attempt into an
:class:`OfflineViolation` naming what was tried, instead of a silent install or upload.
"""
import importlib.abc
import ipaddress
import os
import socket
import subprocess
import sys
from typing import Iterable

__all__ = ['OfflineViolation', 'offline', 'FORBIDDEN_MODULES']

# modules whose import has side effects on the network or the environment
FORBIDDEN_MODULES = {
    'MNN.tools': "importing MNN.tools runs 'pip install aliyun-log-python-sdk' and sends a usage "
                 'log; call the converter in the _tools extension module instead',
}


class OfflineViolation(RuntimeError):
    """A conversion tried to reach the network, install a package or run a program."""


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ('localhost', ''):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _ForbiddenImports(importlib.abc.MetaPathFinder):

    def find_spec(self, name, path=None, target=None):
        for module, why in FORBIDDEN_MODULES.items():
            if name == module or name.startswith(module + '.'):
                raise OfflineViolation(f'import of {name} blocked: {why}')
        return None


class offline:
    """While active: connecting a socket to anything but this machine, ``os.system``, and
    starting a program other than ``allowed_programs`` (absolute paths, e.g. the pnnx binary)
    raise :class:`OfflineViolation`; so does importing a module of :data:`FORBIDDEN_MODULES`.
    Programs that are allowed run with pip and network access disabled in their environment.
    Everything patched is restored when the block ends, also when it raises.

    Example:
        >>> import subprocess
        >>> with offline():  # refused before anything starts
        ...     subprocess.run(['/bin/true'])
        Traceback (most recent call last):
        ...
        vt_mm.deploy.offline.OfflineViolation: starting ['/bin/true'] blocked ...
    """

    def __init__(self, allowed_programs: Iterable[str] = ()):
        self.allowed = {os.path.realpath(p) for p in allowed_programs}
        self._finder = _ForbiddenImports()

    def _checked(self, method):

        def wrapper(sock, address):  # socket.connect / connect_ex take the address only
            if not _is_local(address):
                raise OfflineViolation(f'network connection to {address!r} blocked during a '
                                       'conversion: vt-mm deploys offline')
            return method(sock, address)

        return wrapper

    @staticmethod
    def _no_system(command):
        raise OfflineViolation(f'os.system({command!r}) blocked during a conversion')

    def _popen(self, popen_init):
        allowed = self.allowed

        def popen(process, args, *rest, **kwargs):
            program = args if isinstance(args, (str, bytes, os.PathLike)) else args[0]
            program = os.fsdecode(program)
            if kwargs.get('shell') or os.path.realpath(program) not in allowed:
                raise OfflineViolation(f'starting {args!r} blocked during a conversion (allowed: '
                                       f'{sorted(allowed) or "none"})')
            env = dict(kwargs.get('env') or os.environ)
            env.update(PIP_NO_INDEX='1', PIP_NO_INPUT='1', no_proxy='',
                       https_proxy='http://0.0.0.0:9', http_proxy='http://0.0.0.0:9')
            kwargs['env'] = env
            return popen_init(process, args, *rest, **kwargs)

        return popen

    def __enter__(self):
        self._saved = (socket.socket.connect, socket.socket.connect_ex, os.system,
                       subprocess.Popen.__init__)
        connect, connect_ex, _, popen_init = self._saved
        socket.socket.connect = self._checked(connect)
        socket.socket.connect_ex = self._checked(connect_ex)
        os.system = self._no_system
        subprocess.Popen.__init__ = self._popen(popen_init)
        sys.meta_path.insert(0, self._finder)
        return self

    def __exit__(self, *exc_info):
        (socket.socket.connect, socket.socket.connect_ex, os.system,
         subprocess.Popen.__init__) = self._saved
        sys.meta_path.remove(self._finder)
        return False
