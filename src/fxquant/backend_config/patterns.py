"""The two pattern formats, and conversion between them.

Users write patterns in *forward* order: an op (``nn.Linear``), or a 2- or 3-tuple of ops in
the order data flows through them (``(nn.Conv2d, nn.BatchNorm2d, nn.ReLU)``). The FX pattern
matcher walks graphs backwards from an op's output, so it keys patterns in the *reversed
nested tuple* ("complex") format::

    operator = module type | functional | torch op | method name | MatchAllNode
    Pattern  = operator | (operator, Pattern, Pattern, ...)

    (a, b)    -> (b, a)
    (a, b, c) -> (c, (b, a))

Fuser methods take their modules in forward order after ``is_qat``; for the matcher they are
wrapped to take them in the reversed order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fxquant.eager.fuser_methods import MatchAllNode, Pattern

if TYPE_CHECKING:
    from fxquant.backend_config.pattern_config import BackendPatternConfig

__all__ = [
    "MatchAllNode",
    "Pattern",
    "fuser_method_in_reversed_nested_format",
    "pattern_in_reversed_nested_format",
    "reverse_sequential_pattern",
]


def _check_sequence_length(pattern: tuple[Any, ...]) -> None:
    if len(pattern) not in (2, 3):
        raise ValueError(
            f"a forward-order pattern tuple must have 2 or 3 elements, got {pattern!r}; "
            "describe longer or branching patterns with _set_pattern_complex_format"
        )


def reverse_sequential_pattern(pattern: Pattern) -> Pattern:
    """A forward-order pattern in the reversed nested tuple format.

    Example::

        >>> reverse_sequential_pattern((nn.Conv2d, nn.BatchNorm2d, nn.ReLU))
        (nn.ReLU, (nn.BatchNorm2d, nn.Conv2d))
    """
    if not isinstance(pattern, tuple):
        return pattern
    _check_sequence_length(pattern)
    if len(pattern) == 2:
        first, second = pattern
        return (second, first)
    first, second, third = pattern
    return (third, (second, first))


def pattern_in_reversed_nested_format(config: BackendPatternConfig) -> Pattern:
    """The pattern of ``config`` in the reversed nested tuple format the matcher uses."""
    if config._pattern_complex_format is not None:
        return config._pattern_complex_format
    if config.pattern is None:
        raise ValueError(
            f"{config!r} has no pattern: call set_pattern (or _set_pattern_complex_format) "
            "before adding it to a BackendConfig"
        )
    return reverse_sequential_pattern(config.pattern)


def _reverse2(fuser_method: Callable[..., Any]) -> Callable[..., Any]:
    def reversed_fuser(is_qat: bool, second: Any, first: Any) -> Any:
        return fuser_method(is_qat, first, second)

    return reversed_fuser


def _reverse3(fuser_method: Callable[..., Any]) -> Callable[..., Any]:
    def reversed_fuser(is_qat: bool, third: Any, second_first: tuple[Any, Any]) -> Any:
        second, first = second_first
        return fuser_method(is_qat, first, second, third)

    return reversed_fuser


def fuser_method_in_reversed_nested_format(config: BackendPatternConfig) -> Callable[..., Any]:
    """The fuser method of ``config`` taking its modules in the reversed nested format.

    ``f(is_qat, conv, relu)`` becomes ``f'(is_qat, relu, conv)``; ``f(is_qat, conv, bn,
    relu)`` becomes ``f'(is_qat, relu, (bn, conv))``. A config whose pattern is given in the
    complex format already has a fuser method in that format, returned as is.
    """
    if config.fuser_method is None:
        raise ValueError(f"{config!r} has no fuser method; call set_fuser_method first")
    if config._pattern_complex_format is not None:
        return config.fuser_method
    if not isinstance(config.pattern, tuple):
        raise TypeError(
            f"a fuser method needs a tuple pattern of 2 or 3 modules, got {config.pattern!r}"
        )
    _check_sequence_length(config.pattern)
    if len(config.pattern) == 2:
        return _reverse2(config.fuser_method)
    return _reverse3(config.fuser_method)
