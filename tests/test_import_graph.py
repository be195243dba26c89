"""The package's layers import one way: utils <- datasets <- models <- engine <- deploy / analysis
(deploy and analysis do not import each other), and ``import vt_mm`` loads neither deployment
nor analysis code nor any runtime."""
import ast
import glob
import os
import os.path as osp
import subprocess
import sys

from helpers import ROOT

LAYERS = {'utils': 0, 'datasets': 1, 'models': 2, 'engine': 3, 'deploy': 4, 'analysis': 4}


def _layer(module: str):
    parts = module.split('.')
    return parts[1] if len(parts) > 1 and parts[0] == 'vt_mm' and parts[1] in LAYERS else None


def _imports(path: str):
    """vt_mm modules imported by the file at ``path`` (relative imports resolved)."""
    package = osp.relpath(path, ROOT)[:-3].replace(os.sep, '.')
    if package.endswith('__init__'):
        package = package.rsplit('.', 1)[0] + '.__init__'
    tree = ast.parse(open(path).read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:-node.level]
                found.append('.'.join(base + ([node.module] if node.module else [])))
            else:
                found.append(node.module)
    return [m for m in found if m and m.startswith('vt_mm')]


def test_arrows_go_one_way():
    wrong = []
    for path in glob.glob(osp.join(ROOT, 'vt_mm', '**', '*.py'), recursive=True):
        own = _layer(osp.relpath(path, ROOT)[:-3].replace(os.sep, '.'))
        if own is None:
            continue
        for imported in _imports(path):
            other = _layer(imported)
            if other is None or other == own:
                continue
            if LAYERS[other] > LAYERS[own] or LAYERS[other] == LAYERS[own]:
                wrong.append(f'{osp.relpath(path, ROOT)} imports {imported}')
    assert wrong == []


def test_the_check_sees_a_wrong_arrow(tmp_path):
    """The parser resolves relative imports (the models' old ``from ...deploy import``)."""
    models = osp.join(ROOT, 'vt_mm', 'models', 'heads', 'light_head.py')
    assert 'vt_mm.models.folding' in _imports(models)
    fake = osp.join(ROOT, 'vt_mm', 'models', 'heads', '_graph_probe.py')
    try:
        with open(fake, 'w') as f:
            f.write('from ...deploy import fold_conv_bn\n')
        assert _imports(fake) == ['vt_mm.deploy']
    finally:
        os.remove(fake)


def test_import_vt_mm_loads_no_deployment_or_analysis_code():
    script = ('import sys, vt_mm\n'
              'loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", '
              '"onnxruntime", "openvino", "MNN", "ncnn", "pnnx", "tensorflow", "litert_torch") '
              'or m.startswith(("vt_mm.deploy", "vt_mm.analysis")))\n'
              'print(loaded)\n')
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == '[]'
