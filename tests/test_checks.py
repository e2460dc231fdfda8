"""jemfast._checks: the shared argument checks and their one message shape."""

from __future__ import annotations

import ast
import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import jemfast._checks
from jemfast._checks import check_bounds, check_choice, check_int, check_number


# ---------------------------------------------------------------------- check_int
@pytest.mark.parametrize(
    "value, kwargs, expected",
    [
        (0, {}, 0),
        (-5, {}, -5),
        (3, {"minimum": 1}, 3),
        (1, {"minimum": 1}, 1),
        (10, {"minimum": 1, "maximum": 10}, 10),
        (np.int64(7), {"minimum": 0}, 7),
        (np.int32(2), {}, 2),
        (np.uint8(255), {"maximum": 255}, 255),
        pytest.param(2**70, {"minimum": 0}, 2**70, id="2**70"),
    ],
)
def test_check_int_accepts_and_converts(value, kwargs, expected):
    result = check_int("n", value, **kwargs)
    assert result == expected and type(result) is int


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (0, {"minimum": 1}, "n_bins must be an int >= 1, got 0"),
        (-1, {"minimum": 0}, "n_bins must be an int >= 0, got -1"),
        (11, {"maximum": 10}, "n_bins must be an int <= 10, got 11"),
        (11, {"minimum": 1, "maximum": 10}, r"n_bins must be an int in \[1, 10\], got 11"),
        (True, {"minimum": 0}, "n_bins must be an int >= 0, got True"),
        (False, {}, "n_bins must be an int, got False"),
        (np.bool_(True), {}, "n_bins must be an int, got np.True_"),
        (2.0, {"minimum": 1}, "n_bins must be an int >= 1, got 2.0"),
        (np.float64(2.0), {}, r"n_bins must be an int, got np.float64\(2.0\)"),
        ("3", {}, "n_bins must be an int, got '3'"),
        (None, {}, "n_bins must be an int, got None"),
    ],
)
def test_check_int_refuses_with_one_message_shape(value, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_int("n_bins", value, **kwargs)


def test_check_int_type_error_is_only_for_the_type():
    with pytest.raises(TypeError, match="seed must be an int, got 1.5"):
        check_int("seed", 1.5, type_error=TypeError)
    with pytest.raises(TypeError, match="got True"):
        check_int("seed", True, type_error=TypeError)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        check_int("seed", -1, minimum=0, type_error=TypeError)


# ---------------------------------------------------------------------- check_number
@pytest.mark.parametrize(
    "value, kwargs, expected",
    [
        (0, {}, 0.0),
        (-2.5, {}, -2.5),
        (0.0, {"minimum": 0}, 0.0),
        (1, {"minimum": 0, "maximum": 1}, 1.0),
        (1e-300, {"positive": True}, 1e-300),
        (np.float32(0.5), {"positive": True}, 0.5),
        (np.float64(2.0), {"maximum": 2}, 2.0),
        (np.int64(3), {}, 3.0),
        (Fraction(1, 4), {}, 0.25),
    ],
)
def test_check_number_accepts_and_converts(value, kwargs, expected):
    result = check_number("x", value, **kwargs)
    assert result == expected and type(result) is float


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (math.nan, {"positive": True}, "temperature must be a finite number > 0, got nan"),
        (math.inf, {}, "temperature must be a finite number, got inf"),
        (-math.inf, {"minimum": 0}, "temperature must be a finite number >= 0, got -inf"),
        (np.float32("nan"), {}, r"temperature must be a finite number, got np.float32\(nan\)"),
        pytest.param(10**400, {}, "temperature must be a finite number, got 10000", id="int-too-large-for-float"),
        (0.0, {"positive": True}, "temperature must be a finite number > 0, got 0.0"),
        (-1, {"positive": True}, "temperature must be a finite number > 0, got -1"),
        (-0.5, {"minimum": 0}, "temperature must be a finite number >= 0, got -0.5"),
        (1.5, {"minimum": 0, "maximum": 1}, r"temperature must be a finite number in \[0, 1\], got 1.5"),
        (1.5, {"positive": True, "maximum": 1}, "temperature must be a finite number > 0 and <= 1, got 1.5"),
        (True, {}, "temperature must be a finite number, got True"),
        ("1", {}, "temperature must be a finite number, got '1'"),
        (None, {"positive": True}, "temperature must be a finite number > 0, got None"),
        (1j, {}, r"temperature must be a finite number, got 1j"),
    ],
)
def test_check_number_refuses_with_one_message_shape(value, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        check_number("temperature", value, **kwargs)


def test_check_number_type_error_is_only_for_the_type():
    with pytest.raises(TypeError, match="step_size must be a finite number, got '1'"):
        check_number("step_size", "1", type_error=TypeError)
    with pytest.raises(ValueError, match="step_size must be a finite number, got nan"):
        check_number("step_size", math.nan, type_error=TypeError)


def test_long_values_are_cut_in_messages():
    with pytest.raises(ValueError) as info:
        check_number("x", list(range(1000)))
    assert info.value.args[0].endswith("...") and len(info.value.args[0]) < 150


# ---------------------------------------------------------------------- check_choice
@pytest.mark.parametrize(
    "value, choices, expected",
    [
        ("eval", ("eval", "train"), "eval"),
        (np.str_("train"), ("eval", "train"), "train"),
        (None, (None, "batch"), None),
        (True, (True, False, "auto"), True),
        (False, (True, False, "auto"), False),
        ("auto", (True, False, "auto"), "auto"),
        (2, (1, 2), 2),
    ],
)
def test_check_choice_accepts_and_returns_the_choice(value, choices, expected):
    result = check_choice("mode", value, choices)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    "value, choices, message",
    [
        ("test", ("eval", "train"), r"mode must be one of \('eval', 'train'\), got 'test'"),
        (1, (True, False, "auto"), r"mode must be one of \(True, False, 'auto'\), got 1"),
        (0, (True, False), r"mode must be one of \(True, False\), got 0"),
        (True, (0, 1), r"mode must be one of \(0, 1\), got True"),
        (None, ("a",), r"mode must be one of \('a',\), got None"),
        (np.array([1, 2]), (1, 2), r"mode must be one of \(1, 2\), got array\(\[1, 2\]\)"),
        (["eval"], ("eval",), r"mode must be one of \('eval',\), got \['eval'\]"),
    ],
)
def test_check_choice_refuses(value, choices, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_choice("mode", value, choices)


# ---------------------------------------------------------------------- check_bounds
@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ((-1, 1), (-1.0, 1.0)),
        ([0.0, 0.0], (0.0, 0.0)),
        ((np.float32(-0.5), np.int64(2)), (-0.5, 2.0)),
    ],
)
def test_check_bounds_accepts_and_converts(value, expected):
    result = check_bounds("clamp", value)
    assert result == expected
    assert result is None or (type(result) is tuple and all(type(v) is float for v in result))


@pytest.mark.parametrize(
    "value, message",
    [
        ((2, 1), r"clamp must be None or a \(lo, hi\) pair with lo <= hi, got \(2, 1\)"),
        ((1.0,), r"clamp must be None or a \(lo, hi\) pair, got \(1.0,\)"),
        ((0, 1, 2), r"clamp must be None or a \(lo, hi\) pair, got \(0, 1, 2\)"),
        (1.0, r"clamp must be None or a \(lo, hi\) pair, got 1.0"),
        ("ab", r"clamp must be None or a \(lo, hi\) pair, got 'ab'"),
        (np.array([0.0, 1.0]), r"clamp must be None or a \(lo, hi\) pair, got array"),
        ((0.0, math.inf), r"clamp must be None or a \(lo, hi\) pair of finite numbers, got \(0.0, inf\)"),
        ((math.nan, 1.0), r"clamp must be None or a \(lo, hi\) pair of finite numbers, got \(nan, 1.0\)"),
        ((False, 1), r"clamp must be None or a \(lo, hi\) pair of finite numbers, got \(False, 1\)"),
        (("0", 1), r"clamp must be None or a \(lo, hi\) pair of finite numbers, got \('0', 1\)"),
        pytest.param(
            (0, 10**400), r"clamp must be None or a \(lo, hi\) pair of finite numbers, got \(0, 1000", id="huge-int"
        ),
    ],
)
def test_check_bounds_refuses(value, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        check_bounds("clamp", value)


# ---------------------------------------------------------------------- the module
def test_module_is_a_standard_library_leaf():
    """Anything in jemfast may import it: it imports nothing heavy and nothing of jemfast."""
    tree = ast.parse(Path(jemfast._checks.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "math", "numbers", "typing"}
    assert set(jemfast._checks.__all__) == {"check_int", "check_number", "check_choice", "check_bounds"}


@pytest.mark.parametrize(
    "call",
    [
        lambda: check_int("arg", -3, minimum=0),
        lambda: check_number("arg", math.nan),
        lambda: check_choice("arg", "x", ("a",)),
        lambda: check_bounds("arg", (3, 1)),
    ],
)
def test_every_message_names_the_argument_and_the_value(call):
    with pytest.raises(ValueError) as info:
        call()
    assert re.fullmatch(r"arg must be .+, got .+", info.value.args[0])
