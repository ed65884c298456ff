"""nnopt.flows against independent references: the matrix exponential and lstsq."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnopt.flows import (error_eigenbasis, gradient_descent, least_squares_flow, least_squares_gd,
                         least_squares_gradient, least_squares_loss, residual_flow)

D = torch.float64


def problem(n: int, d: int, seed: int, rank: int | None = None):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=D)
    if rank is not None:  # force rank deficiency: X = A B with inner dimension `rank`
        X = torch.randn(n, rank, generator=g, dtype=D) @ torch.randn(rank, d, generator=g, dtype=D)
    y = torch.randn(n, generator=g, dtype=D)
    w0 = torch.randn(d, generator=g, dtype=D)
    return X, y, w0


def flow_by_matrix_exponential(X, y, w0, t):
    """Solve d/dt (w, 1) = [[-XᵀX, Xᵀy], [0, 0]] (w, 1) by expm: independent of the SVD route."""
    d = X.shape[1]
    A = torch.zeros(d + 1, d + 1, dtype=D)
    A[:d, :d], A[:d, d] = -X.T @ X, X.T @ y
    z0 = torch.cat([w0, torch.ones(1, dtype=D)])
    return torch.linalg.matrix_exp(A * t) @ z0


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 7), d=st.integers(1, 7), seed=st.integers(0, 10_000),
       t=st.floats(0.0, 3.0), deficient=st.booleans())
def test_flow_matches_matrix_exponential(n, d, seed, t, deficient):
    rank = max(1, min(n, d) - 1) if deficient else None
    X, y, w0 = problem(n, d, seed, rank)
    X = X / max(1.0, float(torch.linalg.matrix_norm(X, 2)))  # keep exp(At) well scaled
    got = least_squares_flow(X, y, w0, t)[0]
    want = flow_by_matrix_exponential(X, y, w0, t)[:-1]
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)


def test_flow_limit_is_minimum_norm_solution_plus_null_component():
    X, y, w0 = problem(4, 6, 0)  # underdetermined: null space of dimension 2
    w_inf = least_squares_flow(X, y, w0, 1e6)[0]
    pinv = torch.linalg.pinv(X)
    null_projector = torch.eye(6, dtype=D) - pinv @ X
    assert torch.allclose(w_inf, pinv @ y + null_projector @ w0, atol=1e-10)


def test_flow_at_time_zero_is_w0_and_times_are_vectorised():
    X, y, w0 = problem(5, 3, 1)
    times = torch.tensor([0.0, 0.5, 2.0], dtype=D)
    path = least_squares_flow(X, y, w0, times)
    assert path.shape == (3, 3)
    assert torch.equal(path[0], w0)
    for k, s in enumerate(times):
        assert torch.allclose(path[k], least_squares_flow(X, y, w0, float(s))[0])


def test_residual_flow_is_rotated_error_of_flow():
    X, y, w0 = problem(6, 3, 2)  # overdetermined: XXᵀ has 3 zero eigenvalues
    times = torch.linspace(0, 2, 5, dtype=D)
    lam, Q = error_eigenbasis(X)
    expected = torch.stack([Q @ (y - X @ w) for w in least_squares_flow(X, y, w0, times)])
    assert torch.allclose(residual_flow(X, y, w0, times), expected, atol=1e-10)
    assert int((lam < 1e-10).sum()) == 3


def test_error_eigenbasis_diagonalises_gram_matrix():
    X, _, _ = problem(5, 8, 3)
    lam, Q = error_eigenbasis(X)
    assert torch.allclose(Q @ Q.T, torch.eye(5, dtype=D), atol=1e-12)
    assert torch.allclose(Q @ X @ X.T @ Q.T, torch.diag(lam), atol=1e-10)
    assert bool((lam[:-1] >= lam[1:]).all()) and bool((lam >= 0).all())


def test_gd_iterates_follow_update_rule_and_converge_to_lstsq():
    X, y, w0 = problem(10, 3, 4)
    lr = 1.0 / float(torch.linalg.matrix_norm(X, 2) ** 2)
    path = least_squares_gd(X, y, w0, lr, 2000)
    assert path.shape == (2001, 3)
    assert torch.allclose(path[1], w0 + lr * X.T @ (y - X @ w0))
    w_ls = torch.linalg.lstsq(X, y.unsqueeze(1)).solution.squeeze(1)
    assert torch.allclose(path[-1], w_ls, atol=1e-8)


def test_gradient_matches_autograd_and_loss_definition():
    X, y, w0 = problem(7, 4, 5)
    w = w0.clone().requires_grad_(True)
    loss = least_squares_loss(X, y, w)
    assert torch.isclose(loss, 0.5 * ((y - X @ w0) ** 2).sum())
    (auto,) = torch.autograd.grad(loss, w)
    assert torch.allclose(least_squares_gradient(X, y, w0), auto)


def test_gradient_descent_detects_divergence():
    X, y, w0 = problem(5, 2, 6)
    lr = 3.0 / float(torch.linalg.matrix_norm(X, 2) ** 2)  # beyond 2/λmax: the iterates blow up
    with pytest.raises(FloatingPointError, match="diverged"):
        least_squares_gd(X, y, w0, lr * 1e3, 5000)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda X, y, w: least_squares_flow(X, y[:-1], w, 1.0), ValueError, "y must have shape"),
        (lambda X, y, w: least_squares_flow(X, y, w[:-1], 1.0), ValueError, "w0 must have shape"),
        (lambda X, y, w: least_squares_flow(X[0], y, w, 1.0), ValueError, "X must have 2"),
        (lambda X, y, w: least_squares_flow(X.long(), y, w, 1.0), TypeError, "X must have a floating"),
        (lambda X, y, w: least_squares_flow(X, y.float(), w, 1.0), TypeError, "same dtype"),
        (lambda X, y, w: least_squares_flow(X, y, w, -1.0), ValueError, "t must be >= 0"),
        (lambda X, y, w: least_squares_flow(X, y, w, torch.tensor([1.0, -2.0], dtype=D)), ValueError, "t must contain"),
        (lambda X, y, w: least_squares_flow(X * float("nan"), y, w, 1.0), ValueError, "X must contain only finite"),
        (lambda X, y, w: least_squares_gd(X, y, w, 0.0, 3), ValueError, "lr must be > 0"),
        (lambda X, y, w: least_squares_gd(X, y, w, 0.1, -1), ValueError, "steps must be >= 0"),
        (lambda X, y, w: least_squares_gd(X, y, w, 0.1, 2.5), TypeError, "steps must be an integer"),
        (lambda X, y, w: least_squares_gd(X.numpy(), y, w, 0.1, 2), TypeError, "X must be a torch.Tensor"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, exc, match):
    X, y, w0 = problem(4, 3, 7)
    with pytest.raises(exc, match=match):
        call(X, y, w0)


def test_inputs_on_different_devices_are_refused():
    X, y, w0 = problem(4, 3, 8)
    meta_w = torch.empty(3, dtype=D, device="meta")
    with pytest.raises(ValueError, match="same device"):
        least_squares_loss(X, y, meta_w)
