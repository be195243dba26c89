"""Configs as the train and test tools read them: file and line of a syntax error, options
(``--cfg-options``) that keep their spaces, the toolbox a config belongs to."""
import os.path as osp
from typing import Iterator, List, Optional, Tuple

from mmengine.config import Config, DictAction

__all__ = ['ConfigSyntaxError', 'read_config', 'load_config', 'toolbox_of', 'walk_config',
           'parse_option_value', 'ConfigOptionsAction']



class ConfigSyntaxError(ValueError):
    """A config file (or one of its bases) is not valid Python."""

def _first_syntax_error(path: str, seen=None) -> Optional[SyntaxError]:
    """The syntax error in ``path`` or, depth first, in its ``_base_`` files (None if all
    parse), with the file, line and text Python gives."""
    import ast
    seen = set() if seen is None else seen
    if path in seen or not osp.isfile(path):
        return None
    seen.add(path)
    try:
        with open(path, encoding='utf-8') as f:  # pragma: no mutate (utf-8 locales: equal)
            ast.parse(f.read(), filename=path)
    except SyntaxError as e:
        return e
    try:
        bases = Config._get_base_files(path)
    except Exception:  # noqa: BLE001 - a base list mmengine cannot read: nothing to follow
        return None
    for base in bases:
        try:
            base_path, _ = Config._get_cfg_path(base, path)
        except Exception:  # noqa: BLE001 - unresolved scopes are reported by mmengine itself
            continue
        found = _first_syntax_error(osp.normpath(base_path), seen) if base_path else None
        if found is not None:
            return found
    return None

def _syntax_error_in(path: str, error: SyntaxError) -> ConfigSyntaxError:
    """Which file of the config's inheritance holds the error, its line and the line's text.

    mmengine re-raises the parser's error without its position (Python shows
    ``File "<unknown>"``), and for a base file without the file's name; the config and its
    bases are parsed again here to find it."""
    found = _first_syntax_error(path)
    if found is None:
        return ConfigSyntaxError(f'config {path}: {error}')
    text = f':\n    {found.text.rstrip()}' if found.text else ''
    return ConfigSyntaxError(f'config {found.filename}, line {found.lineno}: {found.msg}{text}')

def read_config(path: str) -> Config:
    """``Config.fromfile`` with one clear error for a missing file or a syntax error (file and
    line), instead of a traceback through mmengine."""
    if not osp.isfile(path):
        raise ConfigSyntaxError(f'config {path}: no such file')
    try:
        return Config.fromfile(path)
    except SyntaxError as e:
        raise _syntax_error_in(path, e) from None

def load_config(path: str, cfg_options: Optional[dict], launcher: str,
                work_dir: Optional[str]) -> Config:
    """The config as the train/test tools use it: options merged, launcher and work dir set."""
    cfg = read_config(path)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    toolbox_of(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg

def toolbox_of(cfg: Config) -> str:
    """'mmseg', 'mmdet' or 'mmpretrain', from the config's default_scope."""
    scope = cfg.get('default_scope')
    if scope not in ('mmseg', 'mmdet', 'mmpretrain'):
        raise ValueError(f"config default_scope is {scope!r}; vt-mm's tools handle 'mmseg', "
                         "'mmdet' "
                         "and 'mmpretrain' configs (inherit from one of their base configs)")
    return scope

def walk_config(node, path='') -> Iterator[Tuple[str, object, object]]:
    """Yields (dotted path, parent, key) for every entry of nested dicts and lists."""
    if isinstance(node, dict):
        for k, v in node.items():
            p = f'{path}.{k}' if path else str(k)
            yield p, node, k
            yield from walk_config(v, p)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            p = f'{path}[{i}]'
            yield p, node, i
            yield from walk_config(v, p)

def _split_top_level(text: str) -> List[str]:
    """``text`` split at the commas outside brackets (a trailing comma ends the list)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in '([':
            depth += 1
        elif char in ')]':
            depth -= 1
        elif char == ',' and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if text[start:].strip() or not parts:
        parts.append(text[start:])
    return parts

def parse_option_value(text: str):
    """One ``--cfg-options`` value: a number, bool, None or string, or a list ``a,b`` / ``[a, b]``
    / tuple ``(a, b)`` of them, as mmengine's ``DictAction`` reads it, except that spaces inside
    a value are kept (``data_root=/data/my dataset``); spaces around brackets and commas are
    layout."""
    from mmengine.config import DictAction
    text = text.strip().strip('\'"')
    if text.count('(') != text.count(')') or text.count('[') != text.count(']'):
        raise ValueError(f'--cfg-options value {text!r} has unbalanced brackets')
    is_tuple = text.startswith('(') and text.endswith(')')
    if is_tuple or (text.startswith('[') and text.endswith(']')):
        inner = text[1:-1].strip()
        values = [parse_option_value(p) for p in _split_top_level(inner)] if inner else []
        return tuple(values) if is_tuple else values
    parts = _split_top_level(text)
    if len(parts) > 1 or text.endswith(','):
        return [parse_option_value(p) for p in parts]
    return DictAction._parse_int_float_bool(text)  # commas inside brackets: one value

class ConfigOptionsAction(DictAction):
    """mmengine's ``DictAction`` for ``--cfg-options`` with :func:`parse_option_value`."""

    @staticmethod
    def _parse_iterable(val: str):
        return parse_option_value(val)
