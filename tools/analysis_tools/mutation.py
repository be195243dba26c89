"""Mutation testing of vt-mm's most checked modules with mutmut (`make mutation`).

    python tools/analysis_tools/mutation.py [--groups checkpoint converters base layers vtfpn]
        [--max-children 2] [--list-survivors]

For each group, a copy of the repository is made under a temporary directory with a
``[tool.mutmut]`` section naming the group's source file and its fast tests; ``mutmut run``
mutates every function there (operators, constants, arguments, return values: mutmut 3 mutates
code inside functions only; module-level tables such as the converters' rename lists and the
checkpoint allow-list are covered by tools/analysis_tools/known_mutants.py), runs the tests
that cover each mutant, and the survivors are printed with mutmut's diffs. Prints one table:
group, mutants, killed, survived (and timeouts / suspicious / not covered), share surviving.
mutmut is not part of the stack; `make mutation` installs it into the environment.
"""
import argparse
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time

from known_mutants import ROOT, copy_repository  # noqa: E402  (the same folder)

# group -> (files to mutate, mutant name patterns (None: all), fast tests)
GROUPS = {
    'checkpoint': (['vt_mm/utils/checkpoint.py'], None,
                   ['tests/test_checkpoint_safety.py', 'tests/test_checkpoints.py', '-m',
                    'not slow']),
    'converters': (['vt_mm/models/backbones/pyramid_tnt.py', 'vt_mm/models/backbones/seaformer.py'],
                   ['*checkpoint_filter_fn*'],
                   ['tests/test_pyramid_tnt.py', 'tests/test_seaformer.py', '-m', 'not slow']),
    'base': (['vt_mm/models/backbones/base.py'], None,
             ['tests/test_backbone_contract.py', 'tests/test_vt_resnet.py', '-m', 'not slow']),
    'layers': (['vt_mm/models/layers/visual_tokens.py'], None,
               ['tests/test_visual_tokens.py', 'tests/test_visual_token_layers_contract.py',
                'tests/test_vtfpn.py', '-m', 'not slow']),
    'vtfpn': (['vt_mm/models/necks/vt_fpn.py'], None,
              ['tests/test_vtfpn.py', 'tests/test_vtfpn_contract.py', 'tests/test_arg_checks.py',
               'tests/test_vtfpn_detectors.py', 'tests/test_vtfpn_variants.py', '-m',
               'not slow']),
}


def _toml_list(items):
    return '[' + ', '.join(repr(i).replace("'", '"') for i in items) + ']'


def run_group(name, max_children, list_survivors, env):
    files, patterns, tests = GROUPS[name]
    work = copy_repository(f'vtmm-mutmut-{name}-')
    try:
        with open(osp.join(ROOT, 'pyproject.toml')) as f:
            pyproject = f.read()
        pyproject += ('\n[tool.mutmut]\nsource_paths = ["vt_mm/"]\n'
                      f'only_mutate = {_toml_list(files)}\n'
                      f'also_copy = ["configs/", "tools/", "model-index.yml"]\n'
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
        statuses = {}
        names = []
        for line in results.stdout.splitlines():
            m = re.match(r'\s*([\w.]+__mutmut_\d+): (\w[\w ]*)$', line)
            if m and (not patterns or any(re.fullmatch(p.replace('*', '.*'), m.group(1))
                                          for p in patterns)):
                statuses.setdefault(m.group(2), []).append(m.group(1))
                names.append(m.group(1))
        if not names:
            print(run.stdout[-3000:], run.stderr[-3000:])
        survivors = statuses.get('survived', [])
        for status, mutants in statuses.items():
            if status not in ('killed', 'survived'):
                print(f'{status}: ' + ', '.join(mutants))
        if list_survivors:
            for mutant in survivors:
                diff = subprocess.run(mutmut + ['show', mutant], cwd=work, env=env,
                                      capture_output=True, text=True).stdout
                changed = [ln for ln in diff.splitlines()
                           if ln[:1] in '+-' and not ln.startswith(('+++', '---'))]
                print(f'survived {mutant}: ' + ' | '.join(changed))
        return dict(group=name, total=len(names), killed=len(statuses.get('killed', [])),
                    survived=len(survivors),
                    other={k: len(v) for k, v in statuses.items() if k not in ('killed',
                                                                              'survived')},
                    seconds=time.time() - start)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--groups', nargs='+', default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument('--max-children', type=int, default=2)
    parser.add_argument('--list-survivors', action='store_true')
    args = parser.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH='')
    rows = []
    for group in args.groups:
        row = run_group(group, args.max_children, args.list_survivors, env)
        rows.append(row)
        print(f"[mutation] {group}: {row['total']} mutants, {row['killed']} killed, "
              f"{row['survived']} survived, other {row['other']} ({row['seconds']:.0f} s)",
              flush=True)
    print('\n| group | mutants | killed | survived | other | survived % |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        share = 100 * r['survived'] / r['total'] if r['total'] else float('nan')
        print(f"| {r['group']} | {r['total']} | {r['killed']} | {r['survived']} | "
              f"{r['other'] or '-'} | {share:.1f} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
