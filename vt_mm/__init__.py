"""vt-mm: token-based and efficient vision transformers for OpenMMLab.

``import vt_mm`` (or ``custom_imports = dict(imports=['vt_mm'], allow_failed_imports=False)`` in a
config) registers every public module in mmengine's *root* registries (``mmengine.registry.MODELS``,
``TRANSFORMS``, ...). The root is the parent of the mmseg, mmdet and mmpretrain registries, so each
module is buildable by its plain name (``type='VTFPN'``) from configs of all three toolboxes.
It also allow-lists the types mmengine checkpoints hold for torch's ``weights_only`` loading.
"""
import warnings

# setuptools < 81 is pinned on purpose (mmcv's build and mmengine need pkg_resources, which
# mmengine imports when it resolves a 'mmseg::' / 'vt_mm::' base config): its deprecation notice
# says nothing a user can act on.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from . import datasets, engine, models, utils  # noqa: E402,F401  (registers modules)
from .version import __version__  # noqa: E402

__all__ = ['__version__']
