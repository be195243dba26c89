"""Arguments checked at build time: every numeric argument with a valid range fails in the
constructor with its name and the range (docs/en/user_guides/data.md), not later in torch."""
import re

import pytest

from vt_mm.models import backbones, layers
from vt_mm.models.necks import VTFPN


def _vtfpn(**kw):
    return VTFPN(**dict(dict(in_channels=[16, 32], out_channels=16, num_outs=2), **kw))


CASES = [
    # (builder, argument, bad value, text of the valid range)
    (_vtfpn, 'num_tokens', 0, 'an integer >= 1'),
    (_vtfpn, 'token_channels', -8, 'an integer >= 1 (or None)'),
    (_vtfpn, 'num_heads', 0, 'an integer >= 1 (or None)'),
    (_vtfpn, 'groups', 0, 'an integer >= 1 (or None)'),
    (_vtfpn, 'num_transformer_layers', -1, 'an integer >= 0'),
    (_vtfpn, 'out_channels', 0, 'an integer >= 1'),
    (_vtfpn, 'num_outs', 0, 'an integer >= 1'),
    (_vtfpn, 'start_level', -1, 'an integer >= 0'),
    (lambda **kw: _vtfpn(in_channels=[16, 0]), 'in_channels[1]', 0, 'an integer >= 1'),
    (_vtfpn, 'num_tokens', 2.5, 'an integer >= 1'),
    (lambda **kw: layers.FilterTokenizer(**dict(dict(in_channels=8, token_channels=8,
                                                     num_tokens=4), **kw)),
     'num_tokens', 0, 'an integer >= 1'),
    (lambda **kw: layers.FilterTokenizer(**dict(dict(in_channels=8, token_channels=8,
                                                     num_tokens=4), **kw)),
     'value_groups', 0, 'an integer >= 1'),
    (lambda **kw: layers.RecurrentTokenizer(**dict(dict(in_channels=8, token_channels=8), **kw)),
     'num_heads', 0, 'an integer >= 1'),
    (lambda **kw: layers.TokenPositionEncoding(**dict(dict(token_channels=8), **kw)),
     'grid_size', 0, 'an integer >= 1'),
    (lambda **kw: layers.TokenTransformer(**dict(dict(token_channels=8), **kw)),
     'num_heads', -2, 'an integer >= 1'),
    (lambda **kw: layers.TokenTransformer(**dict(dict(token_channels=8), **kw)),
     'ffn_channels', -1, 'an integer >= 0'),
    (lambda **kw: layers.TokenProjector(**dict(dict(in_channels=8, token_channels=8), **kw)),
     'query_groups', 0, 'an integer >= 1'),
    (lambda **kw: layers.VTModule(**dict(dict(in_channels=8, token_channels=8, num_tokens=4),
                                         **kw)),
     'token_channels', 0, 'an integer >= 1'),
    (lambda **kw: backbones.VTResNet(18, **kw), 'num_tokens', 0, 'an integer >= 1'),
    (lambda **kw: backbones.VTResNet(18, **kw), 'token_channels', -8, 'an integer >= 1'),
    (lambda **kw: backbones.VTResNet(18, **kw), 'num_vt_modules', 0, 'an integer >= 1'),
    (lambda **kw: backbones.VTResNet(18, **kw), 'drop_path_rate', 1.5, 'a number in [0, 1)'),
    (lambda **kw: backbones.VTResNet(18, **kw), 'frozen_stages', 5, 'an integer in [-1, 4]'),
    (lambda **kw: backbones.SeaFormer('t', **kw), 'in_channels', 0, 'an integer >= 1'),
    (lambda **kw: backbones.SeaFormer('t', **kw), 'drop_path_rate', -0.1, 'a number in [0, 1)'),
    (lambda **kw: backbones.SeaFormer('t', **kw), 'attn_ratio', 0, 'an integer >= 1'),
    (lambda **kw: backbones.SeaFormer('t', **kw), 'frozen_stages', 9, 'an integer in [-1, 5]'),
    (lambda **kw: backbones.PyramidTNT('ti', **kw), 'in_channels', 0, 'an integer >= 1'),
    (lambda **kw: backbones.PyramidTNT('ti', **kw), 'mlp_ratio', 0, 'a number in (0, inf)'),
    (lambda **kw: backbones.PyramidTNT('ti', **kw), 'drop_path_rate', 1.0, 'a number in [0, 1)'),
    (lambda **kw: backbones.PyramidTNT('ti', **kw), 'frozen_stages', -2, 'an integer in [-1, 4]'),
    # img_size 32 built and then failed in forward on its zero-sized last-stage tables
    (lambda **kw: backbones.PyramidTNT('ti', img_size=(64, 32)), 'img_size[1]', 32,
     'an integer >= 64'),
]


OWNERS = ('VTFPN', 'FilterTokenizer', 'RecurrentTokenizer', 'TokenPositionEncoding',
          'TokenTransformer', 'TokenProjector', 'VTModule', 'VTResNet', 'SeaFormer', 'PyramidTNT')


def _owner(build) -> str:
    """The class a case builds, read from the names its builder calls."""
    names = build.__code__.co_names
    owners = [n for n in names if n in OWNERS] or ['VTFPN' for n in names if n == '_vtfpn']
    return owners[0]


@pytest.mark.parametrize('build,name,value,valid', CASES,
                         ids=[f'{i}-{c[1]}={c[2]}' for i, c in enumerate(CASES)])
def test_bad_argument_names_itself_and_its_range(build, name, value, valid):
    """The message starts with the class that refused the value, then the argument, its
    range and the value given."""
    kwargs = {} if '[' in name else {name: value}
    with pytest.raises(ValueError) as info:
        build(**kwargs)
    message = str(info.value)
    assert message.startswith(f'{_owner(build)}: {name} must be {valid}'), message
    assert f'got {value!r}' in message, message


def test_vtfpn_num_tokens_zero_used_to_die_in_backward():
    """The case of the issue: num_tokens=0 built and failed in backward with a torch message."""
    with pytest.raises(ValueError, match=r'VTFPN: num_tokens must be an integer >= 1, got 0'):
        _vtfpn(num_tokens=0)


def test_boundary_values_are_accepted():
    _vtfpn(num_transformer_layers=0, num_tokens=1)
    layers.TokenTransformer(8, ffn_channels=0)
    backbones.VTResNet(18, drop_path_rate=0.0, frozen_stages=-1, num_vt_modules=1)
    backbones.PyramidTNT('ti', img_size=64)


def test_check_number_intervals_at_their_ends():
    from vt_mm.models.arg_checks import check_number
    check_number('X', 'p', 0.0, 0, 1)  # low end included by default
    check_number('X', 'p', 1.0, 0, 1, high_inclusive=True)
    check_number('X', 'p', 1e-9, 0, 1, low_inclusive=False)
    with pytest.raises(ValueError, match=r'^X: p must be a number in \[0, 1\), got 1\.0$'):
        check_number('X', 'p', 1.0, 0, 1)
    with pytest.raises(ValueError, match=r'^X: p must be a number in \(0, 1\], got 0$'):
        check_number('X', 'p', 0, 0, 1, high_inclusive=True, low_inclusive=False)
    with pytest.raises(ValueError, match=r'^X: p must be a number in \[0, 1\], got 1\.5$'):
        check_number('X', 'p', 1.5, 0, 1, high_inclusive=True)
    for not_a_number in ('0.5', True, None, [0.5]):
        with pytest.raises(ValueError, match=r'^X: p must be a number in \[0, 1\), got '):
            check_number('X', 'p', not_a_number, 0, 1)


def test_check_int_bounds_and_types():
    from vt_mm.models.arg_checks import check_int, check_ints
    check_int('X', 'n', 1)
    check_int('X', 'n', 4, minimum=-1, maximum=4)
    check_int('X', 'n', None, allow_none=True)
    for bad, valid in ((0, 'an integer >= 1'), (5, 'an integer in [-1, 4]'),
                       (True, 'an integer >= 1'), (2.0, 'an integer >= 1'),
                       (None, 'an integer >= 1')):
        kwargs = dict(minimum=-1, maximum=4) if valid.startswith('an integer in') else {}
        with pytest.raises(ValueError, match=rf'^X: n must be {re.escape(valid)}, got '
                           rf'{re.escape(repr(bad))}$'):
            check_int('X', 'n', bad, **kwargs)
    with pytest.raises(ValueError, match=r'^X: n must be an integer >= 1 \(or None\), got 0$'):
        check_int('X', 'n', 0, allow_none=True)
    check_ints('X', 'sizes', [1, 2])
    with pytest.raises(ValueError, match=r'^X: sizes\[1\] must be an integer >= 2, got 1$'):
        check_ints('X', 'sizes', [3, 1], minimum=2)
