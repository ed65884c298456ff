"""Tests for nnopt.linalg: power iteration, Lanczos and Gershgorin against eigvalsh in float64."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnopt import linalg

D = torch.float64


def sym_with_spectrum(eigs: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = len(eigs)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    return q @ torch.diag(torch.tensor(eigs, dtype=D)) @ q.T


def random_sym(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=D)
    return (a + a.T) / 2


def test_lanczos_top_k_matches_eigvalsh():
    A = random_sym(60, 1)
    ref = torch.linalg.eigvalsh(A).flip(0)
    r = linalg.lanczos(A, k=4, tol=1e-10, seed=3)
    assert r.converged
    torch.testing.assert_close(r.values, ref[:4], rtol=1e-9, atol=1e-9)
    # Ritz vectors are unit vectors with the stated residuals
    for i in range(4):
        u = r.vectors[:, i]
        assert abs(float(u.norm()) - 1) < 1e-12
        true_res = float((A @ u - r.values[i] * u).norm())
        assert true_res == pytest.approx(float(r.residuals[i]), abs=1e-8)
    assert r.n_matvecs <= 60


def test_lanczos_not_fooled_by_large_negative_eigenvalue():
    # most negative eigenvalue is 10x larger in magnitude than the top one
    eigs = [-20.0] + list(torch.linspace(-1.0, 1.5, 38).tolist()) + [2.0]
    A = sym_with_spectrum(eigs, 2)
    r = linalg.lanczos(A, tol=1e-8, seed=0)
    assert r.converged
    assert r.value == pytest.approx(2.0, abs=1e-7)
    p = linalg.power_iteration(A, tol=1e-8, seed=0)
    assert p.value == pytest.approx(-20.0, abs=1e-6)  # power iteration finds |λ|max instead


def test_lanczos_error_bound_is_certified():
    A = random_sym(80, 5)
    ref = torch.linalg.eigvalsh(A)
    for m in (3, 6, 10, 20):
        r = linalg.lanczos(A, tol=0.0, max_iter=m, seed=m)
        # Rayleigh-Ritz: theta <= lambda_max; Krylov-Weinstein: some eigenvalue within ||r||
        assert r.value <= float(ref[-1]) + 1e-12
        assert float((ref - r.value).abs().min()) <= r.residual + 1e-12
        assert not r.converged or r.residual <= 0.0


def test_lanczos_invariant_subspace_is_exact():
    A = sym_with_spectrum([3.0, 1.0, 1.0, 1.0, 1.0, -1.0], 4)
    r = linalg.lanczos(A, tol=1e-12, seed=1)
    assert r.converged and r.value == pytest.approx(3.0, abs=1e-10)
    assert r.n_matvecs <= 3  # the Krylov space of a 3-distinct-eigenvalue matrix has dim 3


def test_power_iteration_matches_and_counts():
    A = sym_with_spectrum([5.0, 2.5, 1.0, 0.5, 0.1], 6)
    op = linalg.DenseOperator(A)
    r = linalg.power_iteration(op, tol=1e-10, seed=0)
    assert r.converged and r.value == pytest.approx(5.0, rel=1e-12)
    assert r.n_matvecs == op.n_matvecs == len(r.history)
    assert r.residual <= 1e-10 * 5.0


def test_power_iteration_max_iter_not_converged():
    A = sym_with_spectrum([1.0, 0.999, 0.5], 7)
    r = linalg.power_iteration(A, tol=1e-12, max_iter=5, seed=0)
    assert not r.converged and r.n_matvecs == 5


def test_function_operator():
    A = random_sym(20, 8)
    op = linalg.FunctionOperator(lambda v: A @ v, 20, dtype=D)
    r = linalg.lanczos(op, tol=1e-10)
    assert r.value == pytest.approx(float(torch.linalg.eigvalsh(A)[-1]), rel=1e-9)
    assert op.n_matvecs == r.n_matvecs


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_gershgorin_contains_spectrum(n, seed):
    A = random_sym(n, seed)
    lo, hi = linalg.gershgorin_bounds(A)
    ev = torch.linalg.eigvalsh(A)
    assert lo <= float(ev[0]) + 1e-12 and float(ev[-1]) <= hi + 1e-12


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 30), seed=st.integers(0, 10_000))
def test_lanczos_converged_means_within_tol(n, seed):
    A = random_sym(n, seed)
    tol = 1e-6
    r = linalg.lanczos(A, tol=tol, seed=seed)
    lam = float(torch.linalg.eigvalsh(A)[-1])
    if r.converged:
        assert abs(r.value - lam) <= tol * abs(r.value) + 1e-12


def test_gershgorin_diagonal_is_exact():
    A = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=D))
    assert linalg.gershgorin_bounds(A) == (-2.0, 3.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="matrix"):
        linalg.DenseOperator(torch.randn(3, 4, dtype=D))
    with pytest.raises(ValueError, match="symmetric"):
        linalg.DenseOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=D))
    with pytest.raises(TypeError, match="A"):
        linalg.lanczos([[1.0]])
    with pytest.raises(ValueError, match="k"):
        linalg.lanczos(torch.eye(3, dtype=D), k=4)
    with pytest.raises(ValueError, match="tol"):
        linalg.power_iteration(torch.eye(3, dtype=D), tol=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        linalg.power_iteration(torch.eye(3, dtype=D), max_iter=0)
    with pytest.raises(ValueError, match="v0"):
        linalg.lanczos(torch.eye(3, dtype=D), v0=torch.zeros(3, dtype=D))
    with pytest.raises(ValueError, match="v0"):
        linalg.power_iteration(torch.eye(3, dtype=D), v0=torch.ones(4, dtype=D))
    with pytest.raises(ValueError, match="matrix"):
        linalg.gershgorin_bounds(torch.tensor([[1.0, math.nan], [math.nan, 1.0]], dtype=D))
    with pytest.raises(TypeError, match="matrix"):
        linalg.gershgorin_bounds(torch.eye(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="fn"):
        linalg.FunctionOperator(3, 3)
    bad = linalg.FunctionOperator(lambda v: torch.ones(2, dtype=D), 3, dtype=D)
    with pytest.raises(ValueError, match="matvec"):
        linalg.lanczos(bad)


def test_more_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        linalg.gershgorin_bounds(torch.ones(2, 3, dtype=D))
    with pytest.raises(ValueError, match="symmetric"):
        linalg.gershgorin_bounds(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=D))
    with pytest.raises(ValueError, match="max_iter"):
        linalg.lanczos(torch.eye(5, dtype=D), k=3, max_iter=2)
    with pytest.raises(TypeError, match="dtype"):
        linalg.FunctionOperator(lambda v: v, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="size"):
        linalg.FunctionOperator(lambda v: v, 0)

    class Sizeless:  # satisfies the protocol's attributes but reports no valid size
        size, dtype, device = 0, D, torch.device("cpu")

        def matvec(self, v: torch.Tensor) -> torch.Tensor:
            return v

    with pytest.raises(ValueError, match="A.size"):
        linalg.lanczos(Sizeless())
    nan_op = linalg.FunctionOperator(lambda v: v * math.nan, 3, dtype=D)
    with pytest.raises(FloatingPointError, match="non-finite"):
        linalg.lanczos(nan_op)
    with pytest.raises(FloatingPointError, match="non-finite"):
        linalg.power_iteration(nan_op)


def test_generator_seed_gives_the_same_start_as_its_integer_seed():
    A = random_sym(20, 4)
    a = linalg.lanczos(A, tol=1e-10, max_iter=3, seed=7)
    b = linalg.lanczos(A, tol=1e-10, max_iter=3, seed=torch.Generator().manual_seed(7))
    assert a.value == b.value and a.n_matvecs == b.n_matvecs == 3
