"""Mutation testing of every vt-mm module with mutmut (`make mutation`).

    python dev/mutation.py [--groups NAME ...] [--fast] [--max-children 2]
        [--list-survivors] [--list]

Every module of ``vt_mm/`` and the argument handling of ``tools/train.py``, ``tools/test.py``
and ``tools/deployment/export.py`` belongs to one group (``--list`` prints them; a test checks
that none is left out). For each group a copy of the repository is made under a temporary
directory with a ``[tool.mutmut]`` section naming the group's files and its fast tests;
``mutmut run`` mutates every function there (operators, constants, arguments, return values:
mutmut 3 mutates code inside functions only; module-level tables such as the converters' rename
lists and the checkpoint allow-list are covered by ``known_mutants.py``), runs the tests that
cover each mutant, and prints one table row per module: mutants, killed, survived (and
timeouts / not covered), share surviving. ``--list-survivors`` prints mutmut's diff of each
survivor. Groups in ``STRICT`` must have no survivor at all (exit status 1 otherwise; a
timeout, a mutant that hung the tests, counts as caught);
``--fast`` runs the security-critical ones (``FAST``: what ``make test`` runs). mutmut comes
with the tools layer (requirements/tools.txt).
"""
import argparse
import fnmatch
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time
from collections import OrderedDict

from known_mutants import ROOT, copy_repository  # the same folder

NOT_SLOW = ['-m', 'not slow']


def _all_but_converter(module):
    """mutmut name patterns for every function of ``module`` but ``checkpoint_filter_fn`` (the
    converters group's)."""
    return [f'*.{module}.xǁ*', f'*.{module}.x_[!c]*', f'*.{module}.x_c[!h]*']


# group -> (files to mutate, mutant name patterns (None: all), tests that cover them (fast))
M = 'tests/test_models'
GROUPS = OrderedDict([
    # the modules that must have no survivor at all (STRICT)
    ('checkpoint', (['vt_mm/engine/checkpoints/safe_loading.py',
                     'vt_mm/engine/checkpoints/conversion.py'], None,
                    ['tests/test_engine/test_checkpoints/test_safe_loading.py',
                     'tests/test_engine/test_checkpoints/test_conversion.py',
                     'tests/test_models/test_backbones/test_official_layouts.py'])),
    ('offline', (['vt_mm/deploy/offline.py'], None, ['tests/test_deploy/test_offline.py',
                                                    '-m', 'not runtime'])),
    ('engine_checkpoints', (['vt_mm/engine/checkpoints/files.py',
                             'vt_mm/engine/checkpoints/saving.py',
                             'vt_mm/engine/checkpoints/resuming.py',
                             'vt_mm/engine/checkpoints/loading.py',
                             'vt_mm/engine/checkpoints/references.py'], None,
                            ['tests/test_engine/test_checkpoints'] + NOT_SLOW)),
    ('engine_data', (['vt_mm/engine/data_checks.py'], None,
                     ['tests/test_engine/test_data_checks.py'] + NOT_SLOW)),
    ('converters', (['vt_mm/models/backbones/pyramid_tnt.py', 'vt_mm/models/backbones/seaformer.py',
                     'vt_mm/models/backbones/official_layouts.py'],
                    ['*checkpoint_filter_fn*', '*official_layouts*'],
                    [f'{M}/test_backbones/test_pyramid_tnt.py',
                     f'{M}/test_backbones/test_seaformer.py',
                     f'{M}/test_backbones/test_official_layouts.py'] + NOT_SLOW)),
    # the rest
    # the tools' argument handling (their main() runs training: the end-to-end tests' part)
    ('tools', (['tools/train.py', 'tools/test.py', 'tools/deployment/export.py'],
               ['tools.*.x_parse_args__mutmut_*', 'tools.*.x_build_config__mutmut_*',
                'tools.test.x__*', 'tools.deployment.export.x_check_args__mutmut_*'],
               ['tests/test_tools/test_train_test_export_args.py'])),
    ('engine', (['vt_mm/engine/config.py', 'vt_mm/engine/distributed.py',
                 'vt_mm/engine/preflight.py', 'vt_mm/engine/hooks.py',
                 'vt_mm/engine/workdir_lock.py', 'vt_mm/engine/model_names.py'], None,
                ['tests/test_engine/test_config.py', 'tests/test_engine/test_distributed.py',
                 'tests/test_engine/test_preflight.py', 'tests/test_engine/test_hooks.py',
                 'tests/test_engine/test_workdir_lock.py',
                 'tests/test_engine/test_model_names.py'] + NOT_SLOW)),
    ('config_scope', (['vt_mm/utils/config_scope.py'], None,
                      ['tests/test_utils/test_config_scope.py'])),
    ('base', (['vt_mm/models/backbones/base.py', 'vt_mm/models/arg_checks.py'], None,
              [f'{M}/test_backbones/test_base.py', f'{M}/test_arg_checks.py',
               f'{M}/test_backbones/test_vt_resnet.py'] + NOT_SLOW)),
    ('layers', (['vt_mm/models/layers/visual_tokens.py'], None,
                [f'{M}/test_layers/test_visual_tokens.py', f'{M}/test_necks/test_vt_fpn.py']
                + NOT_SLOW)),
    ('vtfpn', (['vt_mm/models/necks/vt_fpn.py'], None,
               [f'{M}/test_necks/test_vt_fpn.py', f'{M}/test_arg_checks.py'] + NOT_SLOW)),
    ('vt_resnet', (['vt_mm/models/backbones/vt_resnet.py'], None,
                   [f'{M}/test_backbones/test_vt_resnet.py', f'{M}/test_backbones/test_base.py',
                    f'{M}/test_arg_checks.py'] + NOT_SLOW)),
    ('pyramid_tnt', (['vt_mm/models/backbones/pyramid_tnt.py'], _all_but_converter('pyramid_tnt'),
                     [f'{M}/test_backbones/test_pyramid_tnt.py', f'{M}/test_backbones/test_base.py',
                      f'{M}/test_arg_checks.py'] + NOT_SLOW)),
    ('seaformer', (['vt_mm/models/backbones/seaformer.py'], _all_but_converter('seaformer'),
                   [f'{M}/test_backbones/test_seaformer.py', f'{M}/test_backbones/test_base.py',
                    f'{M}/test_arg_checks.py'] + NOT_SLOW)),
    ('heads', (['vt_mm/models/heads/*.py', 'vt_mm/models/segmentors/*.py',
                'vt_mm/models/layers/activations.py', 'vt_mm/models/layers/tracing.py',
                'vt_mm/models/folding.py', 'vt_mm/models/wrappers.py',
                'vt_mm/datasets/transforms.py'], None,
               [f'{M}/test_heads', f'{M}/test_segmentors', f'{M}/test_layers/test_activations.py',
                f'{M}/test_layers/test_tracing.py', f'{M}/test_folding.py', f'{M}/test_wrappers.py',
                'tests/test_datasets/test_transforms.py'] + NOT_SLOW)),
    ('datasets', (['vt_mm/datasets/demo_*.py', 'vt_mm/datasets/_stamp.py'], None,
                  ['tests/test_datasets/test_demo_lip.py',
                   'tests/test_datasets/test_demo_generators.py'] + NOT_SLOW)),
    ('analysis', (['vt_mm/analysis/*.py', 'vt_mm/utils/timing.py',
                   'vt_mm/utils/flop_handles.py'], None,
                  ['tests/test_analysis', 'tests/test_utils/test_timing.py',
                   'tests/test_utils/test_flop_handles.py',
                   'tests/test_tools/test_analysis_tools.py'] + NOT_SLOW)),
    ('deploy_export', (['vt_mm/deploy/onnx.py', 'vt_mm/deploy/detection.py',
                        'vt_mm/deploy/detection_accuracy.py'], None,
                       ['tests/test_deploy/test_onnx.py', 'tests/test_deploy/test_detection.py',
                        'tests/test_deploy/test_detection_accuracy.py'] + NOT_SLOW)),
    # the runtimes: each mutant is converted and run, so the selection is the smallest family
    # (VT-ResNet-18 on all five backends), the labels graph and INT8 / bf16: hours, not minutes
    ('deploy_pipeline', (['vt_mm/deploy/pipeline.py', 'vt_mm/deploy/accuracy.py',
                          'vt_mm/deploy/calibration.py', 'vt_mm/deploy/backends/__init__.py',
                          'vt_mm/deploy/backends/base.py'], None,
                         ['tests/test_deploy/test_pipeline.py',
                          'tests/test_deploy/test_backends_base.py',
                          'tests/test_deploy/test_int8.py'] + NOT_SLOW)),
    ('deploy_runtimes', (['vt_mm/deploy/backends/onnxruntime.py', 'vt_mm/deploy/quantization.py',
                          'vt_mm/deploy/backends/openvino.py', 'vt_mm/deploy/backends/mnn.py',
                          'vt_mm/deploy/backends/ncnn.py', 'vt_mm/deploy/backends/tflite.py'],
                         None,
                         ['tests/test_deploy/test_backends.py::test_family_on_every_backend'
                          '[vt-resnet18_8xb32_in1k.py]',
                          'tests/test_deploy/test_backends.py::test_labels_output_on_every_backend',
                          'tests/test_deploy/test_backends.py::test_runtimes_print_nothing_on_stdout',
                          'tests/test_deploy/test_int8.py'] + NOT_SLOW)),
])
# modules without functions of their own (imports, __all__, version): nothing to mutate
NOTHING_TO_MUTATE = ('vt_mm/__init__.py', 'vt_mm/version.py', 'vt_mm/*/__init__.py',
                     'vt_mm/*/*/__init__.py')
# groups with no survivor allowed
STRICT = ('checkpoint', 'offline', 'engine_checkpoints', 'engine_data', 'converters')
# the ones make test runs (--fast): the checkpoint allow-list and the offline guard, a minute
FAST = ('checkpoint', 'offline')
# nothing of the package is left out
NOT_MUTATED = ()


def group_of(path: str):
    """The group whose files include ``path`` (repository-relative), or None."""
    for name, (files, _, _) in GROUPS.items():
        if any(fnmatch.fnmatch(path, pattern) for pattern in files):
            return name
    return None


def _toml_list(items):
    return '[' + ', '.join(repr(i).replace("'", '"') for i in items) + ']'


def _module_of(mutant: str) -> str:
    """'vt_mm.engine.hooks.xǁNonFiniteLossHookǁafter_train_iter__mutmut_3' -> its module file."""
    dotted = mutant.split('.x')[0] if '.x' in mutant else mutant.rsplit('.', 1)[0]
    return dotted.replace('.', '/') + '.py'


def run_group(name, max_children, list_survivors, env):
    files, patterns, tests = GROUPS[name]
    work = copy_repository(f'vtmm-mutmut-{name}-')
    try:
        with open(osp.join(ROOT, 'pyproject.toml')) as f:
            pyproject = f.read()
        pyproject += ('\n[tool.mutmut]\nsource_paths = ["vt_mm/", "tools/"]\n'
                      f'only_mutate = {_toml_list(files)}\n'
                      'also_copy = ["configs/", "docs/", "benchmarks/", "dev/", "requirements/", '
                      '"model-index.yml", "README.md", "LICENSE", "setup.py", "Makefile"]\n'
                      f'pytest_add_cli_args_test_selection = {_toml_list(tests)}\n'
                      'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n')
        with open(osp.join(work, 'pyproject.toml'), 'w') as f:
            f.write(pyproject)
        mutmut = [sys.executable, '-m', 'mutmut']
        start = time.time()
        run = subprocess.run(mutmut + ['run', '--max-children', str(max_children)] +
                             (patterns or []), cwd=work, env=env, capture_output=True, text=True)
        results = subprocess.run(mutmut + ['results', '--all', 'true'], cwd=work, env=env,
                                 capture_output=True, text=True)
        rows = OrderedDict()  # module -> {status: [mutants]}
        for line in results.stdout.splitlines():
            m = re.match(r'\s*([\w.ǁ]+__mutmut_\d+): (\w[\w ]*)$', line)
            if m and (not patterns or any(fnmatch.fnmatch(m.group(1), p) for p in patterns)):
                module = _module_of(m.group(1))
                rows.setdefault(module, {}).setdefault(m.group(2), []).append(m.group(1))
        unchecked = any('not checked' in statuses for statuses in rows.values())
        if not rows or unchecked:  # mutmut stopped before testing (a failing clean run)
            print(run.stdout[-3000:], run.stderr[-3000:])
        for module, statuses in rows.items():
            for status, mutants in statuses.items():
                if status not in ('killed', 'survived', 'not checked'):
                    print(f'{module} {status}: ' + ', '.join(mutants))
            if list_survivors:
                for mutant in statuses.get('survived', []):
                    diff = subprocess.run(mutmut + ['show', mutant], cwd=work, env=env,
                                          capture_output=True, text=True).stdout
                    changed = [ln for ln in diff.splitlines()
                               if ln[:1] in '+-' and not ln.startswith(('+++', '---'))]
                    print(f'survived {mutant}: ' + ' | '.join(changed), flush=True)
        return [dict(group=name, module=module, total=sum(len(v) for v in statuses.values()),
                     killed=len(statuses.get('killed', [])),
                     survived=len(statuses.get('survived', [])),
                     other={k: len(v) for k, v in statuses.items()
                            if k not in ('killed', 'survived')},
                     seconds=time.time() - start) for module, statuses in rows.items()]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--groups', nargs='+', choices=list(GROUPS))
    parser.add_argument('--fast', action='store_true',
                        help=f'only the security-critical groups ({", ".join(FAST)}; make test)')
    parser.add_argument('--max-children', type=int, default=2)
    parser.add_argument('--list-survivors', action='store_true')
    parser.add_argument('--list', action='store_true', help='print the groups and exit')
    args = parser.parse_args(argv)
    if args.list:
        for name, (files, patterns, tests) in GROUPS.items():
            print(f'{name}{" (strict)" if name in STRICT else ""}: {" ".join(files)}'
                  f'{" " + str(patterns) if patterns else ""} <- {" ".join(tests)}')
        return 0
    groups = args.groups or (list(FAST) if args.fast else list(GROUPS))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH='')
    rows = []
    for group in groups:
        group_rows = run_group(group, args.max_children, args.list_survivors, env)
        rows += group_rows
        for r in group_rows:
            print(f"[mutation] {group} {r['module']}: {r['total']} mutants, {r['killed']} "
                  f"killed, {r['survived']} survived, other {r['other']} "
                  f"({r['seconds']:.0f} s for the group)", flush=True)
        if not group_rows:
            print(f'[mutation] {group}: no result (see mutmut output above)', flush=True)
    print('\n| group | module | mutants | killed | survived | other | survived % |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        share = 100 * r['survived'] / r['total'] if r['total'] else float('nan')
        print(f"| {r['group']} | {r['module']} | {r['total']} | {r['killed']} | {r['survived']} "
              f"| {r['other'] or '-'} | {share:.1f} |")
    # a timeout is a mutant that made the tests hang (an endless loop): caught, as a hang fails
    # any run; 'not checked', 'no tests' and the rest are not
    bad = [r for r in rows if r['group'] in STRICT and
           (r['survived'] or set(r['other']) - {'timeout'})]
    missing = [g for g in groups if not any(r['group'] == g for r in rows)]
    if bad or missing:
        print('[mutation] FAILED: ' + ', '.join(
            [f"{r['module']}: {r['survived']} survived, other {r['other']}" for r in bad] +
            [f'{g}: no result' for g in missing]))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
