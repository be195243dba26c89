"""vt-mm's models by name in the toolboxes' own APIs.

The toolboxes look a model name up in their own model-index only: ``MMSegInferencer(NAME)`` and
``DetInferencer(NAME)`` through mmengine's ``BaseInferencer._load_model_from_metafile``,
mmpretrain's ``get_model(NAME)``, ``list_models()`` and ``ImageClassificationInferencer(NAME)``
through its ``ModelHub``. ``import vt_mm`` adds vt-mm's model-index to both lookups: a toolbox's
own names keep their meaning, a vt-mm name builds that config's model. vt-mm publishes no weights,
so a model found by name is initialised as its config says and one line says so; pass
``weights=`` / ``pretrained=`` a checkpoint to load one.

Example:
    >>> import vt_mm
    >>> from mmpretrain import get_model
    >>> model = get_model('vt-resnet18_8xb32_in1k')  # doctest: +SKIP
"""
import functools
import os.path as osp
import warnings
from typing import Dict, Optional

from vt_mm.utils.config_scope import configs_root

__all__ = ['NoPublishedWeights', 'model_index_root', 'vt_mm_models', 'find_model', 'lookup',
           'register_classifiers', 'register_model_names']

INFERENCERS = {'mmseg': 'MMSegInferencer', 'mmdet': 'DetInferencer',
               'mmpretrain': 'ImageClassificationInferencer'}


class NoPublishedWeights(UserWarning):
    """A vt-mm model was found by name: it is built from its config without weights."""


def no_weights_message(name: str) -> str:
    return (f'vt-mm publishes no weights for {name}: the model is built from its config and '
            'initialised as the config says; pass a checkpoint (weights=... / pretrained=...) '
            'to load one')


def model_index_root() -> str:
    """The folder that holds vt-mm's model-index.yml and configs/: ``vt_mm/.mim`` when
    installed, the repository in a clone."""
    return osp.dirname(configs_root())


@functools.lru_cache(maxsize=None)
def vt_mm_models() -> Dict[str, dict]:
    """Every model of vt-mm's model-index, by lower-case name: its metafile entry with
    ``Config`` made an absolute path (vt-mm's metafiles give no aliases). Read once per process:
    the files ship with the package."""
    from mmengine.infer import BaseInferencer
    root = model_index_root()
    return {entry['Name'].lower(): dict(entry, Config=osp.join(root, entry['Config']))
            for entry in BaseInferencer._get_models_from_metafile(root)}


def find_model(name: str) -> Optional[dict]:
    """vt-mm's model-index entry of ``name`` (case-insensitive), or None."""
    return vt_mm_models().get(name.lower())


def lookup(original, inferencer, model: str):
    """mmengine's ``BaseInferencer._load_model_from_metafile`` (``original``) first; for a name
    it does not know, vt-mm's model-index: ``(config, None)`` with one
    :class:`NoPublishedWeights` warning, or a ValueError naming the inferencer to use when the
    model is another toolbox's. Module-level, so that it is what runs (and what is tested)
    whenever an inferencer looks a name up."""
    from mmengine.config import Config
    try:
        return original(inferencer, model)
    except ValueError:  # not in the toolbox's own model-index
        entry = find_model(model)
        if entry is None:
            raise
    cfg = Config.fromfile(entry['Config'])
    toolbox = cfg.get('default_scope')
    if toolbox != inferencer.scope:
        raise ValueError(f'{entry["Name"]} is an {toolbox} model of vt-mm, not '
                         f'{inferencer.scope}: use {INFERENCERS.get(toolbox, toolbox)}')
    warnings.warn(no_weights_message(entry['Name']), NoPublishedWeights, stacklevel=3)
    return cfg, None


def _register_with_mmengine() -> None:
    from mmengine.infer import BaseInferencer
    original = BaseInferencer._load_model_from_metafile
    if hasattr(original, '_vt_mm'):  # registered already
        return

    def _load_model_from_metafile(self, model: str):
        return lookup(original, self, model)

    _load_model_from_metafile._vt_mm = True
    _load_model_from_metafile.__wrapped__ = original
    BaseInferencer._load_model_from_metafile = _load_model_from_metafile


def register_classifiers(original, hub) -> None:
    """mmpretrain's ``ModelHub._register_mmpretrain_models`` (``original``), then, the first
    time, vt-mm's classifiers (module-level for the same reason as :func:`lookup`)."""
    first = not getattr(hub, '_vt_mm_registered', False)
    original(hub)
    if first:
        hub._vt_mm_registered = True
        _add_classifiers(hub)


def _register_with_mmpretrain() -> None:
    """vt-mm's classifiers in mmpretrain's ModelHub, added where ModelHub registers its own
    models (lazily, on the first lookup), so both sets are there whatever the order."""
    try:
        from mmpretrain.apis.model import ModelHub
    except ImportError:  # mmpretrain not installed
        return
    original = ModelHub._register_mmpretrain_models.__func__
    if hasattr(original, '_vt_mm'):  # registered already
        return

    def _register_mmpretrain_models(cls):
        register_classifiers(original, cls)

    _register_mmpretrain_models._vt_mm = True
    _register_mmpretrain_models.__wrapped__ = original  # mmpretrain's own, for tests
    ModelHub._register_mmpretrain_models = classmethod(_register_mmpretrain_models)


def _add_classifiers(hub) -> None:
    """The models of vt-mm's index whose result is an image classification (the metafiles
    say so for every mmpretrain config; a test checks it)."""
    from modelindex.load_model_index import load
    model_index = load(osp.join(model_index_root(), 'model-index.yml'))
    model_index.build_models_with_collections()
    for metainfo in model_index.models:
        if not any(r.task == 'Image Classification' for r in metainfo.results or []):
            continue
        metainfo.config = osp.join(model_index_root(), metainfo.config)
        hub._models_dict.setdefault(metainfo.name.lower(), metainfo)


def register_model_names() -> None:
    """Adds vt-mm's model-index to the toolboxes' name lookups (idempotent)."""
    _register_with_mmengine()
    _register_with_mmpretrain()
