"""Runner checkpoints load with weights_only=True; anything else pickled is refused."""
import io
import os

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

import vt_mm  # noqa: F401  (allow-lists the checkpoint types)


class _Payload:

    def __reduce__(self):
        return (os.getcwd, ())


def test_message_hub_types_load():
    buf = HistoryBuffer()
    buf.update(1.5)
    ckpt = {'meta': {'iter': 3, 'seed': np.int64(7), 'lr': np.float64(0.1),
                     'hist': buf, 'arr': np.arange(4, dtype=np.float32)},
            'state_dict': {'w': torch.ones(2)}}
    f = io.BytesIO()
    torch.save(ckpt, f)
    f.seek(0)
    loaded = torch.load(f, weights_only=True)
    assert loaded['meta']['hist'].current() == 1.5
    assert loaded['meta']['seed'] == 7 and loaded['meta']['arr'].tolist() == [0, 1, 2, 3]


def test_arbitrary_pickled_object_is_refused():
    f = io.BytesIO()
    torch.save({'state_dict': {}, 'evil': _Payload()}, f)
    f.seek(0)
    with pytest.raises(Exception, match='(?i)weights_only|unsupported global'):
        torch.load(f, weights_only=True)


class _Getattr:

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


def test_getattr_is_limited_to_history_buffer_statistics():
    f = io.BytesIO()
    torch.save({'x': _Getattr()}, f)
    f.seek(0)
    with pytest.raises(Exception, match='only HistoryBuffer statistics methods'):
        torch.load(f, weights_only=True)
