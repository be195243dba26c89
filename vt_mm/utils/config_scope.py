"""``_base_ = ['vt_mm::DIR/CONFIG.py']``: vt-mm's configs as a package scope, as mmseg's are.

mmengine resolves ``scope::path`` through a fixed table of OpenMMLab packages
(``mmengine.config.utils.MODULE2PACKAGE``) and reads the package's ``.mim/configs``; a package
outside the table gets "mmengine does not support to load vt_mm config". ``import vt_mm`` adds
vt-mm to that table; the installed wheel carries ``vt_mm/.mim/configs`` (setup.py), an editable
install links it to the repository's configs/, and a clone on ``PYTHONPATH`` (no install) reads
the repository's configs/ directly.

One more step is needed: mmengine tags every ``type=...`` dict of a ``scope::`` base with
``_scope_=scope``, so that mmdet's modules are built from mmdet's registries. vt-mm has no
registries of its own (its modules are in mmengine's root, visible from every toolbox), and each
of its configs names its toolbox in ``default_scope``. So for the ``vt_mm`` scope the base is
read like a local file: no ``_scope_`` tags, and the config's own ``default_scope`` applies.
Other scopes are untouched.

mmengine parses ``_base_`` before a config's ``custom_imports``, so a config read by a tool that
has not imported vt_mm yet (mmseg's own tools/train.py) cannot use the scope; see
docs/en/user_guides/configs.md.
"""
import os.path as osp

SCOPE = 'vt_mm'


def configs_root() -> str:
    """vt-mm's configs: the installed ``vt_mm/.mim/configs``, else (a clone) the repository's
    ``configs/``."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    installed = osp.join(package, '.mim', 'configs')
    return installed if osp.isdir(installed) else osp.join(osp.dirname(package), 'configs')


def _clone_config(relative: str):
    """The config in the repository's configs/ when vt_mm is imported from a clone (no install,
    so no ``vt_mm/.mim``), else None (mmengine resolves installed configs itself)."""
    root = configs_root()
    if osp.basename(osp.dirname(root)) == '.mim' or not osp.isdir(root):
        return None
    return osp.join(root, relative)


def register_config_scope() -> None:
    from mmengine.config import Config, utils
    utils.MODULE2PACKAGE.setdefault(SCOPE, 'vt_mm')
    original = Config._get_cfg_path
    if hasattr(original, '_vt_mm_scope'):  # registered already
        return

    def _get_cfg_path(cfg_path, filename):
        if cfg_path.startswith(SCOPE + '::'):
            in_clone = _clone_config(cfg_path.partition('::')[2])
            if in_clone is not None:
                return in_clone, None
        path, scope = original(cfg_path, filename)
        return path, (None if scope == SCOPE else scope)

    _get_cfg_path._vt_mm_scope = True
    _get_cfg_path.__wrapped__ = original  # mmengine's own, for tests that register again
    Config._get_cfg_path = staticmethod(_get_cfg_path)
