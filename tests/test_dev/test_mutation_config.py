"""The mutation check (`make mutation`, dev/mutation.py) covers every module:
each file of vt_mm/ is in exactly one group (or has nothing to mutate), and every test a group
names exists."""
import fnmatch
import glob
import os.path as osp

from helpers import ROOT, load_script


def _mutation():
    return load_script('dev/mutation.py', 'mutation_tool')


def test_every_module_is_in_one_group():
    mutation = _mutation()
    files = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'vt_mm', '**', '*.py'),
                                                           recursive=True))
    skipped = mutation.NOTHING_TO_MUTATE + mutation.NOT_MUTATED
    left_out = []
    for path in files:
        groups = [name for name, (patterns, _, _) in mutation.GROUPS.items()
                  if any(fnmatch.fnmatch(path, p) for p in patterns)]
        if not groups and not any(fnmatch.fnmatch(path, p) for p in skipped):
            left_out.append(path)
        # the backbones' converters are a group of their own, the rest of the file another
        assert len(groups) <= 1 or set(groups) in ({'converters', 'pyramid_tnt'},
                                                    {'converters', 'seaformer'}), (path, groups)
    assert left_out == []
    for tool in ('tools/train.py', 'tools/test.py', 'tools/deployment/export.py'):
        assert mutation.group_of(tool) == 'tools'


def test_groups_name_existing_tests_and_strict_groups():
    mutation = _mutation()
    for name, (patterns, _, tests) in mutation.GROUPS.items():
        assert patterns and all(glob.glob(osp.join(ROOT, p)) for p in patterns), name
        for test in tests:
            if test.startswith('tests/'):
                assert osp.exists(osp.join(ROOT, test.split('::')[0])), (name, test)
    assert set(mutation.STRICT) <= set(mutation.GROUPS)
    assert set(mutation.STRICT) == {'checkpoint', 'offline', 'engine_checkpoints', 'engine_data',
                                    'converters'}


def test_known_mutants_still_apply():
    """dev/known_mutants.py replaces exact text; a row whose code moved would
    silently stop checking anything. (Running the mutants takes minutes: `make mutation`.)"""
    root = ROOT
    known_mutants = load_script('dev/known_mutants.py')
    assert len(known_mutants.MUTANTS) >= 12
    for name, rel, original, mutated, tests in known_mutants.MUTANTS:
        with open(osp.join(root, rel)) as f:
            assert f.read().count(original) == 1, name
        assert original != mutated and osp.isfile(osp.join(root, tests[0])), name
