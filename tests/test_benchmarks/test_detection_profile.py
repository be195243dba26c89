"""benchmarks/detection_profile.py: graph nodes go to the part their module or operator says."""
from helpers import load_script


def test_nodes_are_split_by_module_then_operator():
    profile = load_script('benchmarks/detection_profile.py', 'detection_profile')
    part = profile.part_of
    assert part('/backbone/layer1/layer1.0/conv1/Conv', 'Conv') == 'backbone + neck'
    assert part('/neck/transformer/Add', 'Add') == 'backbone + neck'
    assert part('/rpn_head/rpn_conv/Conv', 'Conv') == 'heads'
    assert part('/mask_head/convs.0/conv/Conv', 'Conv') == 'heads'
    assert part('/bbox_head/fc_cls/Gemm', 'Gemm') == 'heads'
    assert part('/RoiAlign_3', 'RoiAlign') == 'RoIAlign'
    assert part('/NonMaxSuppression', 'NonMaxSuppression') == 'NMS'
    assert part('/TopK_2', 'TopK') == 'other post-processing'
    # a top-level node named like a module is still classed by its operator
    assert part('/backbone_Add', 'Add') == 'other post-processing'
    assert profile.PARTS == ('backbone + neck', 'heads', 'RoIAlign', 'NMS',
                             'other post-processing')
