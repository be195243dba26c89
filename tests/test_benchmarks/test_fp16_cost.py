"""benchmarks/fp16_cost.py: fp16 against fp32 in PyTorch, per config."""
import pytest
from helpers import load_script


@pytest.mark.slow  # a study script
def test_fp16_moves_outputs_by_more_than_fp32_rounding_and_keeps_labels():
    fp16 = load_script('benchmarks/fp16_cost.py')
    (row, ) = fp16.main(['vt_mm::vt_resnet/vt-resnet18_8xb32_in1k.py', '--images', '1'])
    assert row['config'] == 'vt-resnet18_8xb32_in1k.py' and not row['trained']
    assert 1e-5 < row['max_abs_diff'] < 1e-2 < row['max_abs_output']
    assert row['agreement'] == 1.0 and row['inputs'] == 1
