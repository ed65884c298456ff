"""nnopt.validation: every helper names the argument and the expectation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nnopt.validation import (all_finite, check_callable, check_choice, check_class_indices,
                              check_int, check_positive, check_probability, check_real,
                              check_same_device, check_same_dtype, check_tensor)


def test_check_tensor_accepts_and_returns_good_input():
    x = torch.zeros(2, 3)
    assert check_tensor(x, "x", ndim=2, shape=(None, 3)) is x


@pytest.mark.parametrize(
    "value, kwargs, exc, match",
    [
        ([1.0], {}, TypeError, "x must be a torch.Tensor, got list"),
        (torch.zeros(2), {"ndim": 2}, ValueError, "x must have 2 dimension"),
        (torch.zeros(2, 3), {"ndim": (1, 3)}, ValueError, "1 or 3"),
        (torch.zeros(2, 3), {"shape": (2, 4)}, ValueError, r"shape \(2, 4\), got \(2, 3\)"),
        (torch.zeros(2, 3), {"shape": (None, 4)}, ValueError, r"\(\*, 4\)"),
        (torch.zeros(2, dtype=torch.int64), {}, TypeError, "floating-point"),
        (torch.tensor([1.0, float("inf")]), {}, ValueError, "finite"),
        (torch.tensor([float("nan")]), {}, ValueError, "finite"),
        (torch.zeros(2), {"dtype": torch.float64}, TypeError, "dtype torch.float64"),
    ],
)
def test_check_tensor_errors(value, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        check_tensor(value, "x", **kwargs)


def test_non_finite_allowed_when_asked():
    check_tensor(torch.tensor([float("nan")]), "x", finite=False)
    check_tensor(torch.tensor([1, 2]), "x", floating=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_all_finite_agrees_with_isfinite(dtype):
    big = torch.finfo(dtype).max
    cases = [
        torch.zeros(0, dtype=dtype),
        torch.randn(1000, generator=torch.Generator().manual_seed(0)).to(dtype),
        torch.tensor([1.0, float("nan")], dtype=dtype),
        torch.tensor([float("-inf"), 2.0], dtype=dtype),
        torch.tensor([float("inf"), float("-inf")], dtype=dtype),  # the sum is NaN
        torch.full((4,), big, dtype=dtype),  # finite entries whose sum overflows
        torch.tensor([[big, -big], [1.0, 2.0]], dtype=dtype),
    ]
    for t in cases:
        assert all_finite(t) == bool(torch.isfinite(t).all()), t
    assert all_finite(torch.full((4,), big, dtype=dtype))  # the overflow is not a false alarm


def test_same_device_and_dtype():
    a, b = torch.zeros(1), torch.zeros(1, device="meta")
    assert check_same_device(a=a, c=torch.ones(2)) == torch.device("cpu")
    with pytest.raises(ValueError, match="a on cpu, b on meta"):
        check_same_device(a=a, b=b)
    with pytest.raises(TypeError, match="a is torch.float32, b is torch.float64"):
        check_same_dtype(a=a, b=torch.zeros(1, dtype=torch.float64))


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_check_positive_agrees_with_definition(x):
    if math.isfinite(x) and x > 0:
        assert check_positive(x, "lr") == x
    else:
        with pytest.raises(ValueError, match="lr must be"):
            check_positive(x, "lr")


def test_check_positive_non_strict_and_types():
    assert check_positive(0, "t", strict=False) == 0.0
    with pytest.raises(ValueError, match="t must be >= 0"):
        check_positive(-1e-9, "t", strict=False)
    with pytest.raises(TypeError, match="lr must be a real number, got str"):
        check_positive("0.1", "lr")
    with pytest.raises(TypeError, match="lr must be a real number, got bool"):
        check_positive(True, "lr")


@given(st.integers(-100, 100))
def test_check_int_minimum(n):
    if n >= 0:
        assert check_int(n, "steps", minimum=0) == n
    else:
        with pytest.raises(ValueError, match="steps must be >= 0"):
            check_int(n, "steps", minimum=0)


def test_check_int_rejects_floats_and_bools():
    with pytest.raises(TypeError, match="n must be an integer, got float"):
        check_int(2.0, "n")
    with pytest.raises(TypeError, match="got bool"):
        check_int(False, "n")


def test_check_probability_and_choice():
    assert check_probability(1, "p") == 1.0
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"p must"):
            check_probability(bad, "p")
    assert check_probability(0, "p", allow_zero=True) == 0.0
    assert check_choice("a", "mode", ["a", "b"]) == "a"
    with pytest.raises(ValueError, match=r"mode must be one of \['a', 'b'\], got 'c'"):
        check_choice("c", "mode", ["a", "b"])


def test_check_real_accepts_numbers_and_one_element_tensors():
    assert check_real(3, "x") == 3.0 and check_real(-2.5, "x") == -2.5
    assert check_real(torch.tensor([[0.25]]), "x") == 0.25
    x = torch.tensor(1.5, requires_grad=True)
    assert check_real(x * 2, "x") == 3.0
    for bad, exc, match in [(True, TypeError, "x must be a real number, got bool"),
                            ("1", TypeError, "got str"),
                            (math.nan, ValueError, "x must be finite"),
                            (torch.tensor(math.inf), ValueError, "x must be finite"),
                            (torch.zeros(2), ValueError, r"x must be a scalar, got a tensor of shape \(2,\)"),
                            (torch.tensor(True), TypeError, "x must be real"),
                            (torch.tensor(1j), TypeError, "x must be real")]:
        with pytest.raises(exc, match=match):
            check_real(bad, "x")


def test_check_callable_names_the_argument_and_signature():
    check_callable(len, "f")
    with pytest.raises(TypeError, match=r"^f must be callable, got int$"):
        check_callable(3, "f")
    with pytest.raises(TypeError, match=r"loss_fn must be callable as loss_fn\(outputs, targets\), got str"):
        check_callable("mse", "loss_fn", signature="loss_fn(outputs, targets)")


def test_check_class_indices():
    y = torch.tensor([0, 2, 1])
    assert check_class_indices(y, "y", 3, 3) is y
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        check_class_indices([0, 1, 2], "y", 3, 3)
    with pytest.raises(ValueError, match=r"y must be int64 class indices of shape \(3,\)"):
        check_class_indices(y.to(torch.int32), "y", 3, 3)
    with pytest.raises(ValueError, match=r"y must be int64 class indices of shape \(4,\)"):
        check_class_indices(y, "y", 4, 3)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 2\)"):
        check_class_indices(y, "y", 3, 2)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 3\)"):
        check_class_indices(torch.tensor([0, -1, 1]), "y", 3, 3)
    assert check_class_indices(y, "y", 3, 2, check_range=False) is y  # the range is not read
    assert check_class_indices(torch.zeros(0, dtype=torch.long), "y", 0, 3).numel() == 0
