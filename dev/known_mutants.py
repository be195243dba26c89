"""Put each known realistic bug into a copy of the repository and check that the tests catch it.

    python dev/known_mutants.py [--only REGEX] [--keep]

The bugs are the rows of the mutation run that once passed every test (issue "Tests that catch
the bug"): one text replacement each, applied to a fresh copy of vt_mm/ and tests/ under a
temporary directory (the working tree is never touched), then the tests that guard against it
are run there. A row is CAUGHT when those tests fail, SURVIVED when they pass (a hole in the
suite), and BROKEN when the replacement no longer applies (the code moved: update the row).
Exit status 1 unless every row is caught. A general mutation run (mutmut) is `make mutation`.
"""
import argparse
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# (name, file, original text, mutated text, pytest arguments)
MUTANTS = [
    ('eval in the checkpoint allow-list', 'vt_mm/engine/checkpoints/safe_loading.py',
     "'builtins.getattr')\n                                         ] + _numpy_globals()",
     "'builtins.getattr'), eval\n                                         ] + _numpy_globals()",
     ['tests/test_engine/test_checkpoints/test_safe_loading.py']),
    ('PyramidTNT converter: outer_norm1 -> norm2', 'vt_mm/models/backbones/pyramid_tnt.py',
     "('outer_norm1.', 'norm1.')", "('outer_norm1.', 'norm2.')",
     ['tests/test_models/test_backbones/test_pyramid_tnt.py']),
    ('VT-FPN fused laterals drop the lateral bias', 'vt_mm/models/necks/vt_fpn.py',
     'coarse = coarse + conv.conv.bias.view(1, -1, 1, 1)', 'coarse = coarse',
     ['tests/test_models/test_necks/test_vt_fpn.py']),
    ('projector residual in place under autograd', 'vt_mm/models/layers/visual_tokens.py',
     'if inplace and not torch.is_grad_enabled() and x.is_contiguous()',
     'if inplace and x.is_contiguous()',
     ['tests/test_models/test_layers/test_visual_tokens.py']),
    ("alias 'l' -> base", 'vt_mm/models/backbones/base.py', "'l': 'large'", "'l': 'base'",
     ['tests/test_models/test_backbones/test_base.py']),
    ('norm_eval for nn.BatchNorm2d only', 'vt_mm/models/backbones/base.py',
     'if isinstance(m, _BatchNorm):\n                    m.eval()',
     'if isinstance(m, nn.BatchNorm2d):\n                    m.eval()',
     ['tests/test_models/test_backbones/test_base.py']),
    ('PyramidTNT same-size shortcut kept while tracing', 'vt_mm/models/backbones/pyramid_tnt.py',
     'if tuple(src) == tuple(dst) and not tracing():', 'if tuple(src) == tuple(dst):',
     ['tests/test_deploy/test_onnx.py', '-k', 'tnt']),
    ('check_onnx compares the first output only', 'vt_mm/deploy/onnx.py',
     'diff = max(float(np.abs(g.astype(np.float64) - e.double().numpy()).max())\n'
     '                   for g, e in zip(got, expected))',
     'diff = float(np.abs(got[0].astype(np.float64) - expected[0].double().numpy()).max())',
     ['tests/test_deploy/test_onnx.py', '-k', 'check_onnx']),
    ('epoch-based loops skip the RNG restore', 'vt_mm/engine/hooks.py',
     '        else:\n            _set_rng_state(self._pending)\n',
     '        else:\n            pass\n',
     ['tests/test_engine/test_hooks.py', '-k', 'rng']),
    ('NaN loss check ignores Inf', 'vt_mm/engine/hooks.py',
     'if torch.isfinite(torch.as_tensor(loss)).all():',
     'if not torch.isnan(torch.as_tensor(loss)).any():',
     ['tests/test_engine/test_hooks.py', '-k', 'nonfinite']),
    ('checkpoint hook removes the old checkpoint before saving',
     'vt_mm/engine/checkpoints/saving.py',
     '        self._check_finite(runner, step)\n        retired = None',
     '        self._check_finite(runner, step)\n        retired = None\n'
     '        if self.keep_ckpt_ids and len(self.keep_ckpt_ids) == self.max_keep_ckpts:\n'
     '            self._remove(self.file_backend.join_path(self.out_dir, '
     'self.filename_tmpl.format(self.keep_ckpt_ids[0])))',
     ['tests/test_engine/test_checkpoints/test_files.py', '-k', 'kill']),
    ('checkpoints written in place, not renamed', 'vt_mm/engine/checkpoints/files.py',
     "        with open(tmp, 'wb') as f:\n            f.write(data)\n            f.flush()\n"
     "            os.fsync(f.fileno())\n        os.replace(tmp, path)\n",
     "        with open(path, 'wb') as f:\n            f.write(data)\n",
     ['tests/test_engine/test_checkpoints/test_files.py', '-k', 'atomic or full_disk']),
]


# what a mutated copy needs to run the tests (both mutation tools use it)
COPIED_PARTS = ('vt_mm', 'tests', 'configs', 'tools', 'docs', 'benchmarks', 'dev', 'requirements',
                'pyproject.toml', 'setup.py', 'model-index.yml', 'README.md', 'LICENSE', 'Makefile')


def copy_repository(prefix: str) -> str:
    """A fresh temporary copy of the parts the tests need; returns its directory."""
    work = tempfile.mkdtemp(prefix=prefix)
    for part in COPIED_PARTS:
        src = osp.join(ROOT, part)
        (shutil.copytree if osp.isdir(src) else shutil.copy)(src, osp.join(work, part))
    return work


def run_mutant(name, rel, original, mutated, tests, keep=False):
    work = copy_repository('vtmm-mutant-')
    try:
        path = osp.join(work, rel)
        with open(path) as f:
            text = f.read()
        if text.count(original) != 1:
            return 'BROKEN', f'the original text occurs {text.count(original)} times in {rel}'
        with open(path, 'w') as f:
            f.write(text.replace(original, mutated))
        env = dict(os.environ, PYTHONPATH=work, OMP_NUM_THREADS=os.environ.get(
            'OMP_NUM_THREADS', '2'))
        proc = subprocess.run([sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider']
                              + tests, cwd=work, env=env, capture_output=True, text=True)
        summary = (proc.stdout.strip().splitlines() or [''])[-1]
        if proc.returncode == 5:
            return 'BROKEN', 'no test selected: ' + summary
        return ('CAUGHT' if proc.returncode != 0 else 'SURVIVED'), summary
    finally:
        if keep:
            print(f'  kept {work}')
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', help='regex over the row names')
    parser.add_argument('--keep', action='store_true', help='keep the mutated copies')
    args = parser.parse_args(argv)
    rows = [m for m in MUTANTS if not args.only or re.search(args.only, m[0])]
    results = []
    for name, rel, original, mutated, tests in rows:
        start = time.time()
        verdict, detail = run_mutant(name, rel, original, mutated, tests, args.keep)
        results.append(verdict)
        print(f'{verdict:8s} {name} ({rel}; {" ".join(tests)}; {time.time() - start:.0f} s): '
              f'{detail}', flush=True)
    caught = results.count('CAUGHT')
    print(f'[known_mutants] {caught} of {len(results)} caught')
    return 0 if caught == len(results) else 1


if __name__ == '__main__':
    sys.exit(main())
