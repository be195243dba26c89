"""DropoutLinearClsHead: its rate at the boundary, dropout in training only."""
import pytest
import torch
import torch.nn.functional as F

from vt_mm.models.heads import DropoutLinearClsHead


@pytest.fixture(autouse=True)
def _mmpretrain_scope():
    """Built in mmpretrain's scope, as an mmpretrain config builds it (its loss is looked up
    in the current scope; another test file of the same worker may have left a different one)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


def _cls_head(rate=0.5):
    return DropoutLinearClsHead(dropout_rate=rate, num_classes=3, in_channels=8)


@pytest.mark.parametrize('rate', [0.0, 0.2, 0.999])
def test_dropout_rate_accepts_zero_to_below_one(rate):
    head = _cls_head(rate)
    assert head.dropout.p == rate


@pytest.mark.parametrize('rate', [1.0, -0.001, 1.5])
def test_dropout_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(ValueError, match=rf'^dropout_rate must be in \[0, 1\), got {rate}$'):
        _cls_head(rate)


def test_dropout_head_default_and_modes():
    assert DropoutLinearClsHead(num_classes=3, in_channels=8).dropout.p == 0.2
    torch.manual_seed(0)
    head = _cls_head(0.5)
    feats = (torch.randn(4, 8), torch.randn(4, 8))  # the last feature is classified
    head.eval()
    assert torch.equal(head.pre_logits(feats), feats[-1])
    assert torch.equal(head(feats), F.linear(feats[-1], head.fc.weight, head.fc.bias))
    head.train()
    dropped = head.pre_logits(feats)
    zeros = dropped == 0
    assert zeros.any() and not zeros.all()
    assert torch.allclose(dropped[~zeros], 2 * feats[-1][~zeros])
