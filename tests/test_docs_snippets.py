"""Every config snippet of README.md, docs/ and the config folders' READMEs runs against the
installed toolboxes, and their relative links resolve: each
```python block is written to a file as a user's config, read by mmengine after ``import vt_mm``
(``vt_mm::`` bases resolve to the repository's configs/ in a clone, to ``vt_mm/.mim`` when
installed) and its model is built in the config's toolbox."""
import glob
import os.path as osp
import re

import pytest
from mmengine.config import Config

import vt_mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
GUIDES = [osp.join(ROOT, 'README.md')] + sorted(
    glob.glob(osp.join(ROOT, 'docs', '**', '*.md'), recursive=True) +
    glob.glob(osp.join(ROOT, 'configs', '*', 'README.md')))
# reports may name dates and machines; their snippets and links are checked all the same
DOCS = GUIDES + sorted(glob.glob(osp.join(ROOT, 'benchmarks', '**', '*.md'), recursive=True))


def _snippets():
    found = []
    for path in DOCS:
        with open(path) as f:
            text = f.read()
        for match in re.finditer(r'^```python\n(.*?)^```', text, re.S | re.M):
            line = text.count('\n', 0, match.start()) + 1
            found.append(pytest.param(match.group(1), id=f'{osp.relpath(path, ROOT)}:{line}'))
    return found


SNIPPETS = _snippets()


def test_the_docs_have_config_snippets():
    assert len(SNIPPETS) >= 3  # README: vt_mm:: inheritance, custom_imports, VT-FPN in mmseg


@pytest.mark.parametrize('snippet', SNIPPETS)
def test_config_snippet_builds(snippet, tmp_path):
    from vt_mm.analysis import build_model
    path = tmp_path / 'user_config.py'
    path.write_text(snippet)
    cfg = Config.fromfile(str(path))
    if 'custom_imports' in snippet:
        assert 'vt_mm' in cfg.custom_imports['imports']
    if 'model' not in cfg:
        return  # a fragment for a config of the user's (custom_imports alone)
    # in the config's toolbox, SyncBN as BN (it needs a process group to run, not to be
    # checked), no pretrained weights loaded offline; otherwise the model as written
    model, _, _ = build_model(str(path))
    assert sum(p.numel() for p in model.parameters()) > 0
    for part in re.findall(r"type='(\w+)'", snippet):
        if part in ('VTFPN', 'SeaFormer', 'PyramidTNT', 'VTResNet'):
            assert any(type(m).__name__ == part for m in model.modules()), part


@pytest.mark.parametrize('path', DOCS, ids=lambda p: osp.relpath(p, ROOT))
def test_relative_links_resolve(path):
    """A link to a file of the repository ([text](path), relative to the page) names a file
    that exists (anchors and web addresses aside)."""
    with open(path) as f:
        text = f.read()
    text = re.sub(r'^```.*?^```', '', text, flags=re.S | re.M)  # not in code blocks
    broken = []
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'^[a-z]+:', target):
            continue
        file, _, anchor = target.partition('#')
        linked = osp.normpath(osp.join(osp.dirname(path), file)) if file else path
        if not osp.exists(linked):
            broken.append(target)
        elif anchor and linked.endswith('.md') and anchor not in _anchors(linked):
            broken.append(target)
    assert not broken, broken


def _anchors(path):
    """The anchors GitHub gives a page's headings: lower case, punctuation but '-' and '_'
    dropped, spaces as '-'; a repeated heading gets '-1', '-2', ..."""
    with open(path) as f:
        text = re.sub(r'^```.*?^```', '', f.read(), flags=re.S | re.M)
    anchors, seen = set(), {}
    for heading in re.findall(r'^#+ (.+)$', text, re.M):
        slug = re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
        anchors.add(f'{slug}-{seen[slug]}' if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_anchors_follow_githubs_rule():
    assert {'latency-every-family-x-backend', '--output-labels'} <= _anchors(
        osp.join(ROOT, 'docs', 'en', 'user_guides', 'deployment.md')) | _anchors(
            osp.join(ROOT, 'benchmarks', 'reports', 'deployment.md'))


# What a guide must not name (docs/en, README and the config READMEs state how to do things
# and what the numbers are now; dates, machines and run histories belong to the reports and
# the changelog).
HISTORY = {
    'a date': r'\b20\d\d-\d\d(-\d\d)?\b',
    'a round': r'\b(first|second|third|fourth|fifth)[- ]round\b|\bround \d',
    'an issue': r'\bissues?\b(?! (?:a|an|the) )|\(item \d+\)',
    "a machine's model": r'\b(EPYC|Xeon|Ryzen|Threadripper|Core i[3579])\b',
    'a commit': r'\bon [0-9a-f]{7,40}\b',
    'this session': r'\bthis session\b',
    'an internal reference': r'\bFACTS\b',
}


@pytest.mark.parametrize('path', [p for p in GUIDES if 'notes' + osp.sep + 'changelog' not in p],
                         ids=lambda p: osp.relpath(p, ROOT))
def test_guides_name_no_date_machine_round_or_issue(path):
    with open(path) as f:
        lines = f.read().splitlines()
    found = [f'{i}: {what}: {line.strip()[:100]}' for i, line in enumerate(lines, 1)
             for what, pattern in HISTORY.items() if re.search(pattern, line, re.I)]
    assert not found, '\n'.join(found)


def test_history_patterns_catch_what_they_name():
    for what, text in (('a date', 'measured 2026-12-04'), ('a round', 'the third round'),
                       ('a round', 'round 3'), ('an issue', "issue 'Deploy everywhere'"),
                       ('an issue', 'INT8 (item 5)'), ("a machine's model", 'an AMD EPYC'),
                       ('a commit', 'on b4a404b'), ('this session', 'in this session'),
                       ('an internal reference', 'FACTS §1')):
        assert re.search(HISTORY[what], text, re.I), (what, text)
    for text in ('2.0-2.2x faster', 'round(x / scale)', 'Snapdragon 865', 'the 1e-4 check'):
        assert not any(re.search(p, text, re.I) for p in HISTORY.values()), text


def test_readme_is_a_front_page():
    """At most 8 KB, and every guide of docs/en is one link away from it."""
    readme = osp.join(ROOT, 'README.md')
    assert osp.getsize(readme) <= 8 * 1024, osp.getsize(readme)
    with open(readme) as f:
        text = f.read()
    linked = {osp.normpath(osp.join(ROOT, t.split('#')[0]))
              for t in re.findall(r'\]\(([^)\s#]+)[^)]*\)', text)}
    pages = set(glob.glob(osp.join(ROOT, 'docs', 'en', '**', '*.md'), recursive=True))
    assert pages and pages <= linked, sorted(osp.relpath(p, ROOT) for p in pages - linked)


# A path of the repository named anywhere (docs, code, configs, scripts) names a file that exists.
PATH_PATTERN = re.compile(r'(?<![\w/.-])((?:docs|benchmarks|dev|tools|configs|tests|requirements'
                          r'|vt_mm)/[\w./-]+\.(?:md|py|sh|txt|yml|png))\b')


def _repository_text_files():
    from helpers import repository_files
    return [rel for rel in repository_files() if rel.endswith(
        ('.md', '.py', '.sh', '.yml', '.toml', '.txt', 'Makefile', '.ci/run'))]


def test_paths_named_in_the_repository_exist():
    missing = []
    for rel in _repository_text_files():
        if (rel.startswith(('benchmarks/reports/', 'tests/'))
                or rel == 'docs/en/notes/changelog.md'):
            continue  # a report or the changelog may name what a past run used; tests make files
        with open(osp.join(ROOT, rel)) as f:
            text = f.read()
        for named in PATH_PATTERN.findall(text):
            if not osp.exists(osp.join(ROOT, named)):
                missing.append(f'{rel}: {named}')
    assert not missing, '\n'.join(missing)


@pytest.mark.parametrize('folder', ['vt_mm', 'tools', 'configs'])
def test_code_names_no_date_round_issue_or_machine(folder):
    """Docstrings and comments say what the code does and, briefly, why; measurements with
    their dates and machines live in benchmarks/reports/, history in the changelog."""
    patterns = {k: v for k, v in HISTORY.items() if k != 'this session'}
    found = []
    for path in sorted(glob.glob(osp.join(ROOT, folder, '**', '*.py'), recursive=True)):
        with open(path) as f:
            for i, line in enumerate(f, 1):
                found += [f'{osp.relpath(path, ROOT)}:{i}: {what}: {line.strip()[:90]}'
                          for what, pattern in patterns.items() if re.search(pattern, line, re.I)]
    assert not found, '\n'.join(found)


def test_tests_named_in_the_guides_exist():
    """A guide that points at the test of a behaviour (``test_x.py::test_y`` or a bare
    ``test_y``) names one that exists, in that file."""
    defined = {}
    for path in glob.glob(osp.join(ROOT, 'tests', '**', 'test_*.py'), recursive=True):
        with open(path) as f:
            for name in re.findall(r'^def (test_\w+)', f.read(), re.M):
                defined.setdefault(name, set()).add(osp.relpath(path, osp.join(ROOT, 'tests')))
    missing = []
    for path in GUIDES:
        with open(path) as f:
            text = f.read()
        for file, name in re.findall(r'`(?:[^`]*?)((?:[\w/]+/)?test_\w+\.py)::(test_\w+)', text):
            if not any(f == file or f.endswith('/' + file) for f in defined.get(name, ())):
                missing.append(f'{osp.relpath(path, ROOT)}: {file}::{name}')
        for name in re.findall(r'`(test_\w+)(?:\[[^\]`]*\])?`', text):
            if name not in defined:
                missing.append(f'{osp.relpath(path, ROOT)}: {name}')
    assert not missing, '\n'.join(missing)


DOCTEST_MODULES = sorted(
    osp.relpath(p, ROOT)[:-3].replace(osp.sep, '.')
    for p in glob.glob(osp.join(ROOT, 'vt_mm', '**', '*.py'), recursive=True)
    if '>>>' in open(p).read())


def test_the_package_has_docstring_examples():
    assert {'vt_mm.models.necks.vt_fpn', 'vt_mm.models.layers.visual_tokens',
            'vt_mm.analysis.flops', 'vt_mm.deploy.offline'} <= set(DOCTEST_MODULES)


DOCTESTS = r"""
import doctest, importlib, sys
import vt_mm
for module in sys.argv[1:]:
    if module.startswith('vt_mm.deploy'):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print(module, 'skipped: no onnxruntime')
            continue
    result = doctest.testmod(importlib.import_module(module),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    print(module, result.attempted, result.failed)
"""


def test_docstring_examples_run():
    """Every ``Example:`` of a docstring runs and prints what it shows (doctest), in a process
    of its own: examples register backends and set mmengine's default scope."""
    import os
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, '-c', DOCTESTS] + DOCTEST_MODULES, cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = dict(line.split(' ', 1) for line in proc.stdout.splitlines()
                   if line.startswith('vt_mm.'))
    assert set(results) == set(DOCTEST_MODULES), proc.stdout[-3000:]
    failed = {m: r for m, r in results.items()
              if 'skipped' not in r and (r.split()[0] == '0' or r.split()[1] != '0')}
    assert not failed, proc.stdout[-5000:]
