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


def test_mutation_copies_hold_the_whole_repository():
    """Tests read configs, docs, reports and scripts from across the clone (the model zoo reads
    benchmarks/reports/, the scripts' tests dev/ and benchmarks/): a copy that left a folder out
    failed a whole group's clean run. Both copies take every tracked top-level entry but the
    CI folder and .gitignore."""
    import re

    from helpers import repository_files
    top = {path.split('/')[0] for path in repository_files(untracked=False)} - {'.ci',
                                                                                '.gitignore'}
    known_mutants = load_script('dev/known_mutants.py')
    assert set(known_mutants.COPIED_PARTS) == top
    with open(osp.join(ROOT, 'dev', 'mutation.py')) as f:
        also_copy = re.search(r'also_copy = \[(.*?)\]', f.read(), re.S).group(1)
    copied = {name.strip('/') for name in re.findall(r'\\?"([^"\\]+)\\?"', also_copy)}
    assert copied | {'vt_mm', 'tests', 'tools', 'pyproject.toml'} >= top, top - copied


def test_a_strict_group_fails_on_survivors_and_unchecked_mutants_not_on_timeouts(
        monkeypatch, capsys):
    """A timeout is a mutant that hung the tests (caught); a survivor, or a mutant left unchecked
    (mutmut stopped early) or without tests, fails a strict group; a group that is not strict
    only reports."""
    mutation = _mutation()

    def rows(other, survived):
        return lambda name, *args: [dict(group=name, module='m.py', total=10,
                                          killed=10 - survived - sum(other.values()),
                                          survived=survived, other=other, seconds=1.0)]

    cases = [({}, 0, 0), ({'timeout': 2}, 0, 0), ({}, 1, 1), ({'not checked': 3}, 0, 1),
             ({'no tests': 1}, 0, 1), ({'timeout': 1, 'not checked': 1}, 0, 1)]
    for other, survived, status in cases:
        monkeypatch.setattr(mutation, 'run_group', rows(other, survived))
        assert mutation.main(['--groups', 'engine_data']) == status, (other, survived)
        assert mutation.main(['--groups', 'vtfpn']) == 0  # not strict: reported only
    monkeypatch.setattr(mutation, 'run_group', lambda *args: [])
    assert mutation.main(['--groups', 'vtfpn']) == 1  # no result at all
    capsys.readouterr()
