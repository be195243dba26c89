"""What several test modules share: the repository's root, generated detection batches
(:mod:`.det`), small export configs (:mod:`.export`), the converters' one-to-one check
(:mod:`.converters`) and the torch.compile checks' configs (:mod:`.compile_configs`)."""
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# the configs the tests start from most: VT-FPN on LIP (the paper's), its CPU demo, SeaFormer-T's
VTFPN_LIP = osp.join(ROOT, 'configs', 'vtfpn', 'vtfpn_r50_8xb12-40k_lip-473x473.py')
DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'vtfpn_r50_lip-demo-128x128.py')
SEAFORMER_DEMO = osp.join(ROOT, 'configs', 'demo', 'seaformer-tiny_lip-demo-256x256.py')

# configs kept at the paths the README, docs and tests named before the configs followed the
# naming convention: each only inherits its new path
MOVED_CONFIGS = {
    'configs/fpn_lip.py': 'configs/vtfpn/fpn_r50_8xb12-40k_lip-473x473.py',
    'configs/fpn_lip_r101.py': 'configs/vtfpn/fpn_r101_8xb12-40k_lip-473x473.py',
    'configs/vtfpn_lip.py': 'configs/vtfpn/vtfpn_r50_8xb12-40k_lip-473x473.py',
    'configs/vtfpn_lip_r101.py': 'configs/vtfpn/vtfpn_r101_8xb12-40k_lip-473x473.py',
    'configs/fpn_coco-stuff164k.py': 'configs/vtfpn/fpn_r50_8xb4-80k_coco-stuff164k-640x640.py',
    'configs/fpn_coco-stuff164k_r101.py':
    'configs/vtfpn/fpn_r101_8xb4-80k_coco-stuff164k-640x640.py',
    'configs/vtfpn_coco-stuff164k.py': 'configs/vtfpn/vtfpn_r50_8xb4-80k_coco-stuff164k-640x640.py',
    'configs/vtfpn_coco-stuff164k_r101.py':
    'configs/vtfpn/vtfpn_r101_8xb4-80k_coco-stuff164k-640x640.py',
    'configs/vt_resnet/vtfpn_vt-resnet50_lip.py':
    'configs/vtfpn/vtfpn_vt-resnet50_8xb12-40k_lip-473x473.py',
    'configs/vtfpn_lip_demo.py': 'configs/demo/vtfpn_r50_lip-demo-128x128.py',
    'configs/seaformer/seaformer-tiny_lip-256x256_demo.py':
    'configs/demo/seaformer-tiny_lip-demo-256x256.py',
}


def load_script(path: str, name: str = None):
    """A script of tools/, benchmarks/ or dev/ (``path`` relative to the repository) as a
    module, under ``name`` in ``sys.modules`` (default: the file's stem), so that a neighbour
    importing it by name gets this module, not a second copy. The scripts import their
    neighbours by name (running a script puts its folder first on the path): those neighbours
    are loaded the same way first, so ``sys.path`` stays as it is."""
    import ast
    import importlib.util
    import sys
    path = osp.join(ROOT, path)
    name = name or osp.splitext(osp.basename(path))[0]
    if name in sys.modules and getattr(sys.modules[name], '__file__', None) == path:
        return sys.modules[name]
    folder = osp.dirname(path)
    with open(path) as f:
        tree = ast.parse(f.read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    for neighbour in sorted(imported):
        if osp.isfile(osp.join(folder, f'{neighbour}.py')):
            load_script(osp.relpath(osp.join(folder, f'{neighbour}.py'), ROOT))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def repository_files(untracked: bool = True):
    """The clone's files as git lists them (relative paths): tracked ones and, with
    ``untracked``, new ones that are not ignored; only those that exist as files."""
    import subprocess
    command = ['git', 'ls-files'] + (['--cached', '--others', '--exclude-standard']
                                     if untracked else [])
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return [f for f in proc.stdout.splitlines() if osp.isfile(osp.join(ROOT, f))]
