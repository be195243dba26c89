"""Conv-BN folding and deploy mode (vt_mm/models/folding.py)."""
import pytest
import torch
import torch.nn as nn

from vt_mm.models.folding import fold_conv_bn, switch_to_deploy


def _conv_bn(bias, groups=1):
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=bias, groups=groups),
                          nn.BatchNorm2d(6), nn.ReLU())
    bn = block[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    return block


@pytest.mark.parametrize('bias,groups', [(True, 1), (False, 1), (False, 2)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_fold_conv_bn_keeps_outputs_and_removes_every_bn(bias, groups, channels_last):
    block = _conv_bn(bias, groups).train()  # folding puts it in eval mode itself
    x = torch.randn(2, 4, 7, 5)
    expected = block.eval()(x)
    block.train()
    # the default keeps the conv weights' layout
    folded = fold_conv_bn(block, channels_last=True) if channels_last else fold_conv_bn(block)
    assert folded is block and not block.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    assert torch.allclose(block(x), expected, atol=1e-5)
    assert block[0].weight.is_contiguous(memory_format=torch.channels_last) is channels_last


def test_switch_to_deploy_uses_each_modules_own_switch_then_folds_the_rest():
    calls = []

    class Own(nn.Module):

        def __init__(self):
            super().__init__()
            self.inner = _conv_bn(True)

        def switch_to_deploy(self):
            calls.append('own')
            fold_conv_bn(self.inner)

        def forward(self, x):
            return self.inner(x)

    model = nn.Sequential(Own(), _conv_bn(True)[:2])
    model.switch_to_deploy = lambda: calls.append('top')  # the model's own is not called
    x = torch.randn(1, 4, 5, 5)
    model[1][0] = nn.Conv2d(6, 6, 1)
    model[1][1] = nn.BatchNorm2d(6)
    expected = model.eval()(x)
    assert switch_to_deploy(model) is model
    assert calls == ['own']
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(model(x), expected, atol=1e-5)
