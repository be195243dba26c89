"""Checks shared by the converter tests (SeaFormer, PyramidTNT)."""


def assert_values_moved_one_to_one(loaded, official, all_used=True):
    """Every loaded tensor holds the bytes of exactly one official tensor (random official
    tensors are all distinct), and, with ``all_used``, every official tensor went somewhere:
    a converter that drops, duplicates, zeroes or transforms a value fails this (a same-shape
    swap does not; the functional reference test catches that)."""
    def key(t):
        return (t.dtype, t.numel(), t.contiguous().view(-1).numpy().tobytes())
    sources = {}
    for name, t in official.items():
        if not name.endswith('num_batches_tracked'):
            sources.setdefault(key(t), []).append(name)
    assert all(len(v) == 1 for v in sources.values()), 'official test tensors must be distinct'
    used = set()
    for name, t in loaded.items():
        if name.endswith('num_batches_tracked'):
            continue
        match = sources.get(key(t))
        assert match, f'{name}: its value is no official tensor'
        assert match[0] not in used, f'{name}: {match[0]} was loaded twice'
        used.add(match[0])
    if all_used:
        unused = {n for v in sources.values() for n in v} - used
        assert not unused, f'official tensors not loaded: {sorted(unused)[:5]}'
