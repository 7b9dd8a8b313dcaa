"""Argument checks whose messages name the parameter, the value and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["check_int", "check_float", "check_choice", "check_type", "check_new_tokens"]


def check_type(name: str, value: Any, types: type | tuple[type, ...]) -> None:
    """Raise ``TypeError`` unless ``value`` is an instance of ``types``."""
    if not isinstance(value, types):
        allowed = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise TypeError(f"{name}={value!r} has type {type(value).__name__}; allowed: {allowed}")


def check_int(name: str, value: Any, low: int | None, high: int | None) -> None:
    """Raise unless ``value`` is an int (not a bool) with ``low <= value <= high`` (``None`` = unbounded)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r} is not an int; allowed: an int{_range(low, high)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}={value!r} is out of range; allowed: an int{_range(low, high)}")


def check_new_tokens(max_new_tokens: Any, min_new_tokens: Any = 0) -> None:
    """Raise unless ``1 <= max_new_tokens`` and ``0 <= min_new_tokens <= max_new_tokens`` (ints)."""
    check_int("max_new_tokens", max_new_tokens, 1, None)
    check_int("min_new_tokens", min_new_tokens, 0, None)
    if min_new_tokens > max_new_tokens:
        raise ValueError(f"min_new_tokens={min_new_tokens!r} is out of range; allowed: an int in [0, "
                         f"max_new_tokens={max_new_tokens}]")


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise unless ``value`` is a finite real number within the given bounds (open or closed)."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        allowed = f"a number{_range(low, high, low_open, high_open)}"
        raise ValueError(f"{name}={value!r} is not a finite number; allowed: {allowed}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        raise ValueError(f"{name}={value!r} is out of range; allowed: a number{_range(low, high, low_open, high_open)}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not allowed; allowed: {', '.join(map(repr, choices))}")


def _range(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<' if high_open else '<='} {high}"
    return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
