"""Shared argument checks: one place for "an int >= 1", "a finite number > 0", "one of ...", "(lo, hi)".

A leaf module (standard library only) that any part of jemfast can import. Every check
returns the value converted (``int``, ``float``, a tuple of floats) and raises
``ValueError`` with one message shape, naming the argument and the bad value::

    n_bins must be an int >= 1, got 0
    temperature must be a finite number > 0, got nan
    clamp must be None or a (lo, hi) pair with lo <= hi, got (2, 1)

``bool`` is refused wherever a number is expected (``True`` is an ``int`` to Python, but
``n_bins=True`` is a bug). numpy scalars are accepted (they register as
:class:`numbers.Integral` / :class:`numbers.Real`); tensors are not.

Where a public contract promises ``TypeError`` for a value of the wrong type,
:func:`check_int` and :func:`check_number` take ``type_error=TypeError``: a value of the
wrong type then raises that, while a value of the right type out of bounds (or not
finite) still raises ``ValueError``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_bounds", "check_choice", "check_int", "check_number"]

_REPR_LIMIT = 80


def _show(value: Any) -> str:
    """``repr(value)``, cut to a readable length (a tensor's or array's repr can run to pages)."""
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _fail(name: str, what: str, value: Any, error: type[Exception] = ValueError) -> Exception:
    return error(f"{name} must be {what}, got {_show(value)}")


def _range(minimum: Any, maximum: Any, positive: bool = False) -> str:
    """The bounds part of a message: " >= 1", " in [0, 1]", " > 0 and <= 1", or ""."""
    if minimum is not None and maximum is not None and not positive:
        return f" in [{minimum}, {maximum}]"
    parts = []
    if positive:
        parts.append("> 0")
    if minimum is not None:
        parts.append(f">= {minimum}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    return (" " + " and ".join(parts)) if parts else ""


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    type_error: type[Exception] = ValueError,
) -> int:
    """``int(value)`` if ``value`` is an integer (:class:`numbers.Integral`, not a bool) within the bounds.

    Args:
        name: the argument's name, for the message.
        value: the value to check.
        minimum, maximum: inclusive bounds (None: unbounded).
        type_error: the exception for a value that is not an integer (``ValueError``
            unless a caller's contract says ``TypeError``); out of bounds is always ``ValueError``.

    Raises:
        ValueError: ``"{name} must be an int >= {minimum}, got {value!r}"`` and the like.
    """
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise _fail(name, "an int" + _range(minimum, maximum), value, type_error)
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise _fail(name, "an int" + _range(minimum, maximum), value)
    return number


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    type_error: type[Exception] = ValueError,
) -> float:
    """``float(value)`` if ``value`` is a finite real number (:class:`numbers.Real`, not a bool) within the bounds.

    Args:
        name: the argument's name, for the message.
        value: the value to check.
        minimum, maximum: inclusive bounds (None: unbounded).
        positive: also require ``value > 0``.
        type_error: the exception for a value that is not a real number (``ValueError``
            unless a caller's contract says ``TypeError``); NaN, infinities and values
            out of bounds are always ``ValueError``.

    Raises:
        ValueError: ``"{name} must be a finite number > 0, got {value!r}"`` and the like.
    """
    if not _is_real(value):
        raise _fail(name, "a finite number" + _range(minimum, maximum, positive), value, type_error)
    number = _to_float(value)
    if (
        not math.isfinite(number)
        or (positive and number <= 0)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        raise _fail(name, "a finite number" + _range(minimum, maximum, positive), value)
    return number


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    """The element of ``choices`` equal to ``value``; else ``"{name} must be one of {choices}, got {value!r}"``.

    A bool matches only a bool choice and a non-bool only a non-bool one (``1`` is not
    ``True`` here). A value that cannot be compared (an array) matches nothing.
    """
    for choice in choices:
        if isinstance(value, bool) != isinstance(choice, bool):
            continue
        try:
            if value == choice:
                return choice
        except Exception:  # an array's == gives an array, whose truth value raises
            continue
    raise _fail(name, f"one of {choices}", value)


def check_bounds(name: str, value: Any) -> tuple[float, float] | None:
    """None, or ``value`` as a ``(lo, hi)`` tuple of floats if it is a tuple or list of two finite numbers, lo <= hi.

    Raises:
        ValueError: ``"{name} must be None or a (lo, hi) pair ..., got {value!r}"``, saying
            what was wrong: not a pair, not finite numbers, or lo > hi.
    """
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise _fail(name, "None or a (lo, hi) pair", value)
    lo, hi = value
    if not (_is_real(lo) and _is_real(hi)):
        raise _fail(name, "None or a (lo, hi) pair of finite numbers", value)
    lo, hi = _to_float(lo), _to_float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise _fail(name, "None or a (lo, hi) pair of finite numbers", value)
    if lo > hi:
        raise _fail(name, "None or a (lo, hi) pair with lo <= hi", value)
    return lo, hi


def _is_real(value: Any) -> bool:
    """A real number and not a bool (plain floats and ints first: the check runs on hot paths)."""
    kind = type(value)
    return kind is float or kind is int or (kind is not bool and isinstance(value, numbers.Real))


def _to_float(value: numbers.Real) -> float:
    """``float(value)``; inf for an int too large for a float (so it fails the finiteness check)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf
