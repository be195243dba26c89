"""Build hook: ship configs/, tools/ and model-index.yml as ``vt_mm/.mim/``, the layout that
OpenMMLab's mim and mmengine's ``vt_mm::`` config scope read (as mmseg/mmdet/mmpretrain do).

The metadata lives in pyproject.toml. A wheel gets copies made at build time from the
repository's folders (nothing is kept twice in git); an editable install (``pip install -e .``)
gets symlinks ``vt_mm/.mim/* -> ../../*`` in the source tree instead, so edits show through.
"""
import os
import os.path as osp
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = osp.dirname(osp.abspath(__file__))
MIM_PARTS = ('configs', 'tools', 'model-index.yml')


def _ignore(directory, names):
    return [n for n in names if n == '__pycache__' or n.endswith('.pyc')]


class BuildPyWithMim(build_py):

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            _link_into_source_tree()
            return
        target = osp.join(self.build_lib, 'vt_mm', '.mim')
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(target)
        for part in MIM_PARTS:
            src = osp.join(ROOT, part)
            if osp.isdir(src):
                shutil.copytree(src, osp.join(target, part), ignore=_ignore)
            else:
                shutil.copy(src, osp.join(target, part))


def _link_into_source_tree():
    mim = osp.join(ROOT, 'vt_mm', '.mim')
    os.makedirs(mim, exist_ok=True)
    for part in MIM_PARTS:
        link = osp.join(mim, part)
        if not osp.lexists(link):
            os.symlink(osp.join('..', '..', part), link)


setup(cmdclass={'build_py': BuildPyWithMim})
