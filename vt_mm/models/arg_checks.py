"""Constructor argument checks shared by vt-mm's layers, necks and backbones.

A bad number should fail where it is given, with the argument's name and its valid range, not
later in torch ("negative dimension -8", or a backward pass that dies on ``num_tokens=0``).
"""
import numbers
from typing import Optional, Sequence

__all__ = ['check_int', 'check_ints', 'check_number']


def check_int(owner: str, name: str, value, minimum: int = 1, maximum: Optional[int] = None,
              allow_none: bool = False) -> None:
    """``value`` must be an integer in ``[minimum, maximum]`` (or None with ``allow_none``)."""
    if value is None and allow_none:
        return
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok and value >= minimum and (maximum is None or value <= maximum)
    if not ok:
        valid = (f'an integer >= {minimum}' if maximum is None else
                 f'an integer in [{minimum}, {maximum}]')
        raise ValueError(f'{owner}: {name} must be {valid}'
                         + (' (or None)' if allow_none else '') + f', got {value!r}')


def check_ints(owner: str, name: str, values: Sequence, minimum: int = 1) -> None:
    """Every entry of ``values`` must be an integer >= ``minimum``."""
    for i, value in enumerate(values):
        check_int(owner, f'{name}[{i}]', value, minimum)


def check_number(owner: str, name: str, value, low: float, high: float,
                 high_inclusive: bool = False, low_inclusive: bool = True) -> None:
    """``value`` must be a real number in the interval from ``low`` to ``high``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and (value >= low if low_inclusive else value > low)
    ok = ok and (value <= high if high_inclusive else value < high)
    if not ok:
        interval = f'{"[" if low_inclusive else "("}{low}, {high}{"]" if high_inclusive else ")"}'
        raise ValueError(f'{owner}: {name} must be a number in {interval}, got {value!r}')
