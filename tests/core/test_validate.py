"""Checks at the boundary: each accepts what it should, returns it in the promised type, and
refuses everything else with one message naming the parameter, the value and what is allowed."""

import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch

from pushforward.core import (
    MAX_N,
    ConfigError,
    DataError,
    as_float64_rows,
    check_int,
    check_n,
    check_positive,
    check_rows,
    check_share,
)

NAN, INF = float("nan"), float("inf")


# --- check_int -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3)])
def test_check_int_accepts_python_and_numpy_integers_and_returns_an_int(value):
    out = check_int(value, "k", minimum=1, maximum=5)
    assert out == 3 and type(out) is int


def test_check_int_accepts_its_bounds():
    assert check_int(1, "k", minimum=1, maximum=5) == 1
    assert check_int(5, "k", minimum=1, maximum=5) == 5
    assert check_int(10**12, "k", minimum=0) == 10**12


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "k must be an integer >= 1, got 0"),
        (True, "k must be an integer >= 1, got True"),
        (2.0, "k must be an integer >= 1, got 2.0"),
        (NAN, "k must be an integer >= 1, got nan"),
        (INF, "k must be an integer >= 1, got inf"),
        ("2", "k must be an integer >= 1, got '2'"),
        (None, "k must be an integer >= 1, got None"),
        (6_000, "k = 6,000 is too large; at most 5,000"),
    ],
)
def test_check_int_refuses_with_name_value_and_bounds(value, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        check_int(value, "k", minimum=1, maximum=5_000)


# --- check_n -------------------------------------------------------------------------------------


def test_check_n_counts_points_from_1_to_max_n():
    assert check_n(1) == 1
    assert check_n(MAX_N) == MAX_N
    assert check_n(0, allow_zero=True) == 0
    assert check_n(np.int32(7), "rows") == 7


@pytest.mark.parametrize(
    ("value", "allow_zero", "message"),
    [
        (0, False, "n must be an integer >= 1, got 0"),
        (-1, True, "n must be an integer >= 0, got -1"),
        (False, True, "n must be an integer >= 0, got False"),
        (1.0, False, "n must be an integer >= 1, got 1.0"),
        (MAX_N + 1, False, f"n = {MAX_N + 1:,} is too large; at most {MAX_N:,}"),
        (MAX_N + 1, True, f"n = {MAX_N + 1:,} is too large; at most {MAX_N:,}"),
    ],
)
def test_check_n_refuses_counts_outside_its_range(value, allow_zero, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        check_n(value, allow_zero=allow_zero)


# --- check_positive ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.5, 2, np.float32(0.5), np.int64(2), Fraction(1, 3), 1e300])
def test_check_positive_accepts_finite_positive_reals_and_returns_a_float(value):
    out = check_positive(value, "std")
    assert out == float(value) and type(out) is float


def test_check_positive_allow_zero_accepts_zero_only_when_asked():
    assert check_positive(0, "noise", allow_zero=True) == 0.0
    assert check_positive(0.0, "noise", allow_zero=True) == 0.0
    with pytest.raises(ConfigError, match=r"^noise must be a finite number > 0, got 0$"):
        check_positive(0, "noise")


@pytest.mark.parametrize("allow_zero", [False, True])
@pytest.mark.parametrize(
    "value", [NAN, INF, -INF, np.float64("nan"), np.float32("inf"), -1.0, -1e-300, True, "1", None]
)
def test_check_positive_refuses_nan_inf_negative_bool_and_non_numbers(value, allow_zero):
    bound = ">= 0" if allow_zero else "> 0"
    message = f"std must be a finite number {bound}, got {value!r}"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        check_positive(value, "std", allow_zero=allow_zero)


def test_check_positive_refuses_a_tensor():
    with pytest.raises(ConfigError, match=r"^std must be a finite number > 0, got tensor"):
        check_positive(torch.tensor(1.0), "std")


# --- check_share ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.0, 0.03, 0.999, np.float32(0.5), np.float64(0.25)])
def test_check_share_accepts_numbers_in_0_to_1_and_returns_a_float(value):
    out = check_share(value, "ema")
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value", [1, 1.0, -0.01, NAN, INF, -INF, True, False, "0.1", None])
def test_check_share_refuses_outside_0_to_1_nan_inf_and_bools(value):
    message = f"ema = {value!r} is not allowed; use a number in [0, 1) (0 is off)"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        check_share(value, "ema")


# --- check_rows and as_float64_rows --------------------------------------------------------------


def test_check_rows_returns_the_same_tensor():
    x = torch.randn(4, 3)
    assert check_rows(x, "x") is x
    assert check_rows(x, "x", dim=3) is x
    assert check_rows(torch.zeros(0, 3, dtype=torch.float64), "x", dim=3).shape == (0, 3)


@pytest.mark.parametrize(
    ("x", "kwargs", "message"),
    [
        (np.zeros((2, 3)), {}, "x must be a torch.Tensor of shape (n, d), got ndarray"),
        ([[1.0, 2.0]], {"dim": 2}, "x must be a torch.Tensor of shape (n, 2), got list"),
        (torch.zeros(3), {}, "x must have shape (n, d), got (3,)"),
        (
            torch.zeros(2, 4),
            {"dim": 3, "why": " to match the fitted d = 3"},
            "x must have shape (n, 3) to match the fitted d = 3, got (2, 4)",
        ),
        (
            torch.zeros(2, 3, dtype=torch.int64),
            {},
            "x must be a floating-point tensor (float32 or float64), got torch.int64",
        ),
        (
            torch.tensor([[0.0, 1.0], [math.nan, math.inf]]),
            {},
            "x of shape (2, 2) holds 2 NaN or infinite values; first at row 1, column 0",
        ),
        (
            torch.tensor([[0.0, -math.inf]]),
            {},
            "x of shape (1, 2) holds 1 NaN or infinite values; first at row 0, column 1",
        ),
    ],
)
def test_check_rows_refuses_with_name_shape_and_first_bad_value(x, kwargs, message):
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        check_rows(x, "x", **kwargs)


def test_as_float64_rows_converts_detached_without_changing_values():
    x = torch.randn(5, 2, requires_grad=True)
    out = as_float64_rows(x, "x", min_rows=2)
    assert out.dtype == torch.float64 and not out.requires_grad
    torch.testing.assert_close(out, x.detach().double(), rtol=0, atol=0)
    assert as_float64_rows(torch.zeros(0, 2), "x").shape == (0, 2)  # min_rows defaults to 0


@pytest.mark.parametrize(
    ("x", "min_rows", "message"),
    [
        (torch.zeros(3, 0), 0, "with d ≥ 1, got (3, 0)"),
        (torch.zeros(0, 2), 1, "with at least one row and d ≥ 1, got (0, 2)"),
        (torch.zeros(1, 2), 2, "with at least 2 rows and d ≥ 1, got (1, 2)"),
        (torch.zeros(4, 0), 2, "with at least 2 rows and d ≥ 1, got (4, 0)"),
    ],
)
def test_as_float64_rows_refuses_too_few_rows_or_no_columns(x, min_rows, message):
    full = f"x must have shape (n, d) {message}"
    with pytest.raises(DataError, match=f"^{re.escape(full)}$"):
        as_float64_rows(x, "x", min_rows=min_rows)


def test_as_float64_rows_runs_the_row_checks_first():
    with pytest.raises(DataError, match=r"^y of shape \(1, 1\) holds 1 NaN"):
        as_float64_rows(torch.tensor([[math.nan]]), "y", min_rows=1)
