"""Tests of nnopt.landscapes against autograd and dense formulas (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnopt.landscapes import (
    MatrixCompletion,
    incoherence,
    incoherent_ground_truth,
    incoherent_vector,
    pca_gradient,
    pca_hessian,
    pca_hessian_quadratic_form,
    pca_loss,
    pca_stationary_points,
    perturbed_gradient_descent,
    project_observed,
    sample_mask,
    strict_saddle_report,
)

F64 = torch.float64


def random_psd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=F64)
    return A @ A.T / d


def dense_pca(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((M - torch.outer(x, x)) ** 2).sum()


def dense_mc(M: torch.Tensor, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((mask * (M - torch.outer(x, x))) ** 2).sum()


# --------------------------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 7), seed=st.integers(0, 10_000))
def test_pca_value_gradient_hessian_match_autograd(d: int, seed: int) -> None:
    M = random_psd(d, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(d, generator=g, dtype=F64)
    v = torch.randn(d, generator=g, dtype=F64)
    assert torch.allclose(pca_loss(M, x), dense_pca(M, x), rtol=1e-12, atol=1e-12)
    auto_g = torch.func.grad(lambda y: dense_pca(M, y))(x)
    assert torch.allclose(pca_gradient(M, x), auto_g, rtol=1e-12, atol=1e-12)
    auto_H = torch.func.hessian(lambda y: dense_pca(M, y))(x)
    assert torch.allclose(pca_hessian(M, x), auto_H, rtol=1e-12, atol=1e-12)
    assert torch.allclose(pca_hessian_quadratic_form(M, x, v), v @ auto_H @ v, rtol=1e-10,
                          atol=1e-10)


def test_pca_batched_rows_equal_single_calls() -> None:
    M = random_psd(5, 0)
    X = torch.randn(4, 5, dtype=F64, generator=torch.Generator().manual_seed(1))
    V = torch.randn(4, 5, dtype=F64, generator=torch.Generator().manual_seed(2))
    for b in range(4):
        assert torch.allclose(pca_loss(M, X)[b], pca_loss(M, X[b]))
        assert torch.allclose(pca_gradient(M, X)[b], pca_gradient(M, X[b]))
        assert torch.allclose(pca_hessian_quadratic_form(M, X, V)[b],
                              pca_hessian_quadratic_form(M, X[b], V[b]))


def test_pca_stationary_points_are_stationary_and_classified() -> None:
    M = random_psd(6, 3)
    sp = pca_stationary_points(M)
    assert sp.points.shape == (13, 6)  # origin and ±√λᵢvᵢ for 6 positive eigenvalues
    for k in range(sp.points.shape[0]):
        x = sp.points[k]
        assert pca_gradient(M, x).abs().max() < 1e-12
        assert torch.allclose(x @ x, sp.eigenvalue[k], atol=1e-12)
        lam_min = torch.linalg.eigvalsh(pca_hessian(M, x))[0]
        if sp.is_global_min[k]:
            assert lam_min > 0
        else:  # negative curvature towards the top eigenvector: 2(λ − λ₁)
            v1 = sp.eigenvectors[:, 0]
            q = pca_hessian_quadratic_form(M, x, v1)
            assert torch.allclose(q, 2 * (sp.eigenvalue[k] - sp.eigenvalues[0]), atol=1e-10)
            assert q < 0
    assert int(sp.is_global_min.sum()) == 2
    assert torch.allclose(pca_loss(M, sp.points[sp.is_global_min]).min(),
                          pca_loss(M, sp.points).min())


def test_pca_stationary_points_skip_nonpositive_eigenvalues() -> None:
    M = torch.diag(torch.tensor([2.0, 0.0, -1.0], dtype=F64))
    sp = pca_stationary_points(M)
    assert sp.points.shape == (3, 3)
    assert sp.index.tolist() == [-1, 0, 0]


def test_pca_bad_inputs() -> None:
    x = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match="M must be square"):
        pca_loss(torch.zeros(3, 4, dtype=F64), x)
    with pytest.raises(ValueError, match="M must be symmetric"):
        pca_gradient(torch.tensor([[0.0, 1.0, 0], [0, 0, 0], [0, 0, 0]], dtype=F64), x)
    with pytest.raises(ValueError, match="M must contain only finite"):
        pca_loss(torch.full((3, 3), math.nan, dtype=F64), x)
    with pytest.raises(ValueError, match="x must have last dimension 3"):
        pca_loss(torch.eye(3, dtype=F64), torch.zeros(4, dtype=F64))
    with pytest.raises(TypeError, match="M must be a torch.Tensor"):
        pca_loss([[1.0]], x)
    with pytest.raises(TypeError, match="same dtype"):
        pca_loss(torch.eye(3, dtype=F64), torch.zeros(3, dtype=torch.float32))
    with pytest.raises(ValueError, match="v must have the shape of x"):
        pca_hessian_quadratic_form(torch.eye(3, dtype=F64), x, torch.zeros(2, 3, dtype=F64))


# --------------------------------------------------------------------------------------------
# Matrix completion
# --------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 8), p=st.floats(0.05, 1.0), seed=st.integers(0, 10_000))
def test_matrix_completion_matches_autograd(d: int, p: float, seed: int) -> None:
    z, M = incoherent_ground_truth(d, seed)
    M = M + random_psd(d, seed)  # a general symmetric M, not only rank one
    mask = sample_mask(d, p, seed + 1)
    mc = MatrixCompletion(M, mask)
    g = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(d, generator=g, dtype=F64)
    v = torch.randn(d, generator=g, dtype=F64)
    f = lambda y: dense_mc(M, mask, y)  # noqa: E731
    assert torch.allclose(mc.loss(x), f(x), rtol=1e-12, atol=1e-12)
    assert torch.allclose(mc.grad(x), torch.func.grad(f)(x), rtol=1e-10, atol=1e-10)
    H = torch.func.hessian(f)(x)
    assert torch.allclose(mc.hessian(x), H, rtol=1e-10, atol=1e-10)
    assert torch.allclose(mc.hessian_quadratic_form(x, v), v @ H @ v, rtol=1e-10, atol=1e-10)
    assert mc.n_observed == int(mask.sum())


def test_matrix_completion_full_mask_is_pca() -> None:
    M = random_psd(5, 7)
    mc = MatrixCompletion(M, torch.ones(5, 5, dtype=torch.bool))
    x = torch.randn(3, 5, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(mc.loss(x), pca_loss(M, x))
    assert torch.allclose(mc.grad(x), pca_gradient(M, x))
    assert torch.allclose(mc.hessian_quadratic_form(x, x.flip(0)),
                          pca_hessian_quadratic_form(M, x, x.flip(0)))


def test_matrix_completion_many_points_and_batches() -> None:
    d, B = 7, 4
    Ms = torch.stack([incoherent_ground_truth(d, s)[1] for s in range(B)])
    masks = sample_mask(d, 0.5, 11, batch=B)
    batch = MatrixCompletion(Ms, masks)
    X = torch.randn(B, d, dtype=F64, generator=torch.Generator().manual_seed(3))
    V = torch.randn(B, d, dtype=F64, generator=torch.Generator().manual_seed(4))
    for b in range(B):
        single = MatrixCompletion(Ms[b], masks[b])
        assert torch.allclose(batch.grad(X)[b], single.grad(X[b]), atol=1e-13)
        assert torch.allclose(batch.loss(X)[b], single.loss(X[b]), atol=1e-13)
        assert torch.allclose(batch.hessian_quadratic_form(X, V)[b],
                              single.hessian_quadratic_form(X[b], V[b]), atol=1e-12)
        # K points on one problem: the rows of the result are the single-point results
        many = single.grad(X)
        assert torch.allclose(many[b], single.grad(X[b]), atol=1e-13)
        assert torch.allclose(single.loss(X)[b], single.loss(X[b]), atol=1e-13)
    assert batch.observed_per_problem.tolist() == [int(m.sum()) for m in masks]


def test_matrix_completion_ground_truth_is_stationary_with_zero_loss() -> None:
    z, M = incoherent_ground_truth(30, 5)
    mc = MatrixCompletion(M, sample_mask(30, 0.3, 6))
    for sign in (1.0, -1.0):
        assert mc.loss(sign * z) == 0
        assert mc.grad(sign * z).abs().max() < 1e-14


def test_matrix_completion_bad_inputs() -> None:
    _, M = incoherent_ground_truth(4, 0)
    mask = sample_mask(4, 0.5, 0)
    with pytest.raises(ValueError, match="M must be square"):
        MatrixCompletion(torch.zeros(4, 3, dtype=F64), mask)
    full = torch.ones(4, 4, dtype=torch.bool)
    bad = M.clone()
    bad[0, 1] += 1.0
    with pytest.raises(ValueError, match="M must be symmetric"):
        MatrixCompletion(bad, full)
    some = torch.zeros(4, 4, dtype=torch.bool)
    some[0, 1] = some[1, 0] = True  # observe only (0, 1) and (1, 0)
    unknown = M.clone()
    unknown[2, 3] = math.nan  # unobserved entries are unknown and may hold anything
    assert MatrixCompletion(unknown, some).n_observed == 2
    with pytest.raises(ValueError, match="mask must have the shape of M"):
        MatrixCompletion(M, sample_mask(5, 0.5, 0))
    with pytest.raises(TypeError, match="mask must have dtype torch.bool"):
        MatrixCompletion(M, mask.double())
    asym = torch.zeros(4, 4, dtype=torch.bool)
    asym[0, 1] = True
    with pytest.raises(ValueError, match="mask must be symmetric"):
        MatrixCompletion(M, asym)
    nan = M.clone()
    nan[1, 1] = math.inf
    with pytest.raises(ValueError, match="M must contain only finite"):
        MatrixCompletion(nan, full)
    mc = MatrixCompletion(M, mask)
    with pytest.raises(ValueError, match="x must contain only finite"):
        mc.grad(torch.tensor([0.0, math.nan, 0.0, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="x must have last dimension 4"):
        mc.loss(torch.zeros(5, dtype=F64))
    with pytest.raises(TypeError, match="x must have dtype"):
        mc.grad(torch.zeros(4, dtype=torch.float32))
    with pytest.raises(ValueError, match="v must have the shape of x"):
        mc.hessian_quadratic_form(torch.zeros(4, dtype=F64), torch.zeros(3, dtype=F64))
    batch = MatrixCompletion(M[None].repeat(2, 1, 1), sample_mask(4, 0.5, 1, batch=2))
    with pytest.raises(ValueError, match=r"x must have shape \(2, 4\)"):
        batch.grad(torch.zeros(4, dtype=F64))


def test_sample_mask_is_symmetric_bernoulli_and_seeded() -> None:
    d, p = 300, 0.1
    m = sample_mask(d, p, 0)
    assert m.dtype == torch.bool and m.shape == (d, d)
    assert torch.equal(m, m.T)
    assert torch.equal(m, sample_mask(d, p, 0))
    assert not torch.equal(m, sample_mask(d, p, 1))
    # the upper triangle holds n = d(d+1)/2 independent Bernoulli(p): 4 standard deviations
    n = d * (d + 1) // 2
    k = int(torch.triu(m).sum())
    assert abs(k - n * p) < 4 * math.sqrt(n * p * (1 - p))
    assert bool(sample_mask(5, 1.0, 0).all())
    batch = sample_mask(4, 0.5, 2, batch=3)
    assert batch.shape == (3, 4, 4) and torch.equal(batch, batch.transpose(1, 2))


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, math.nan])
def test_sample_mask_rejects_p_outside_unit_interval(p: float) -> None:
    with pytest.raises(ValueError, match="p must"):
        sample_mask(5, p, 0)


def test_sample_mask_rejects_bad_d_and_seed() -> None:
    with pytest.raises(ValueError, match="d must be >= 1"):
        sample_mask(0, 0.5, 0)
    with pytest.raises(TypeError, match="d must be an integer"):
        sample_mask(2.5, 0.5, 0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        sample_mask(3, 0.5, -1)


def test_project_observed() -> None:
    A = torch.arange(9, dtype=F64).reshape(3, 3)
    mask = torch.eye(3, dtype=torch.bool)
    assert torch.equal(project_observed(A, mask), torch.diag(torch.diag(A)))
    with pytest.raises(ValueError, match="mask must have the shape"):
        project_observed(A, torch.ones(2, 2, dtype=torch.bool))


def test_incoherent_generators() -> None:
    z = incoherent_vector(400, 0)
    assert torch.allclose(z.norm(), torch.tensor(1.0, dtype=F64))
    assert float(incoherence(z)) < 2 * math.sqrt(2 * math.log(400))
    r = incoherent_vector(64, 1, kind="rademacher")
    assert torch.allclose(incoherence(r), torch.tensor(1.0, dtype=F64))
    assert float(incoherence(incoherent_vector(100, 2, mu=3.0))) <= 3.0
    e1 = torch.zeros(9, dtype=F64)
    e1[0] = 1
    assert torch.allclose(incoherence(e1), torch.tensor(3.0, dtype=F64))  # √d
    z2, M = incoherent_ground_truth(10, 3)
    assert torch.allclose(M, torch.outer(z2, z2))
    with pytest.raises(ValueError, match="mu must be >= 1"):
        incoherent_vector(10, 0, mu=0.5)
    with pytest.raises(ValueError, match="mu=1.01 too small"):
        incoherent_vector(100, 0, mu=1.01, max_tries=3)
    with pytest.raises(ValueError, match="kind must be one of"):
        incoherent_vector(10, 0, kind="uniform")
    with pytest.raises(ValueError, match="z must be nonzero"):
        incoherence(torch.zeros(3, dtype=F64))


# --------------------------------------------------------------------------------------------
# Strict saddles
# --------------------------------------------------------------------------------------------


def grid(lo: float, hi: float, n: int) -> torch.Tensor:
    t = torch.linspace(lo, hi, n, dtype=F64)
    a, b = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([a.flatten(), b.flatten()], 1)


def test_strict_saddle_report_matches_closed_forms() -> None:
    f = lambda x: (x[0] ** 2 - 1) ** 2 + (x[1] ** 2 - 1) ** 2  # noqa: E731
    pts = grid(-1.5, 1.5, 21)
    minima = torch.tensor([[a, b] for a in (-1.0, 1.0) for b in (-1.0, 1.0)], dtype=F64)
    rep = strict_saddle_report(f, pts, 0.5, 1.0, 0.3, minima=minima)
    grad = torch.stack([4 * pts[:, 0] * (pts[:, 0] ** 2 - 1), 4 * pts[:, 1] * (pts[:, 1] ** 2 - 1)], 1)
    hdiag = 12 * pts**2 - 4
    assert torch.allclose(rep.grad_norm, grad.norm(dim=1), atol=1e-12)
    assert torch.allclose(rep.lambda_min, hdiag.min(dim=1).values, atol=1e-12)
    assert torch.allclose(rep.distance, torch.cdist(pts, minima).min(1).values)
    assert rep.satisfied and rep.n_violations == 0
    assert sum(rep.counts().values()) == pts.shape[0]


def test_strict_saddle_report_flags_the_non_strict_saddle() -> None:
    f = lambda x: x[0] ** 2 + x[1] ** 3  # noqa: E731   Ma Example 8.2: no local minimum at all
    pts = torch.cat([grid(-1.0, 1.0, 21), torch.zeros(1, 2, dtype=F64)])
    rep = strict_saddle_report(f, pts, 0.1, 0.1, 0.1, minima=torch.zeros(0, 2, dtype=F64))
    assert not rep.satisfied
    origin = pts.shape[0] - 1
    assert rep.case[origin] == 0 and rep.grad_norm[origin] == 0 and rep.lambda_min[origin] == 0
    g = lambda x: x[0] ** 2 + x[1] ** 4  # noqa: E731   degenerate but a true minimum
    rep2 = strict_saddle_report(g, pts, 0.1, 0.1, 0.5, minima=torch.zeros(1, 2, dtype=F64))
    assert rep2.satisfied


def test_strict_saddle_report_bad_inputs() -> None:
    f = lambda x: (x**2).sum()  # noqa: E731
    pts = torch.zeros(3, 2, dtype=F64)
    mins = torch.zeros(1, 2, dtype=F64)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        strict_saddle_report(f, pts, 0.0, 1.0, 1.0, minima=mins)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        strict_saddle_report(f, pts, 1.0, 1.0, -1.0, minima=mins)
    with pytest.raises(ValueError, match="minima must have shape"):
        strict_saddle_report(f, pts, 1.0, 1.0, 1.0, minima=torch.zeros(1, 3, dtype=F64))
    with pytest.raises(ValueError, match="points must have 2"):
        strict_saddle_report(f, torch.zeros(2, dtype=F64), 1.0, 1.0, 1.0, minima=mins)
    with pytest.raises(TypeError, match="f must be callable"):
        strict_saddle_report(3, pts, 1.0, 1.0, 1.0, minima=mins)


def saddle_grad(x: torch.Tensor) -> torch.Tensor:
    # f = ½x₁² − ½x₂² + ¼x₂⁴: strict saddle at 0, minima at (0, ±1)
    return torch.stack([x[..., 0], -x[..., 1] + x[..., 1] ** 3], -1)


def test_plain_gd_stays_at_the_saddle_and_perturbed_gd_escapes() -> None:
    x0 = torch.zeros(8, 2, dtype=F64)
    plain = perturbed_gradient_descent(saddle_grad, x0, 0.1, 200, radius=0.0,
                                       grad_threshold=1e-3, wait=10, seed=0)
    assert torch.equal(plain.iterates[-1], x0)
    assert int(plain.n_perturbations.sum()) == 0
    pgd = perturbed_gradient_descent(saddle_grad, x0, 0.1, 200, radius=1e-3,
                                     grad_threshold=1e-3, wait=10, seed=0)
    end = pgd.iterates[-1]
    # PGD keeps kicking at the minimum too (its gradient is small there), and GD contracts
    # in between kicks, so it stays within one kick radius (1e-3) of a minimum (0, ±1).
    assert ((end - torch.stack([torch.zeros(8, dtype=F64), end[:, 1].sign()], 1)).norm(dim=1)
            <= 1e-3).all()
    assert (pgd.n_perturbations >= 1).all()
    assert pgd.perturbed.shape == (200, 8)
    again = perturbed_gradient_descent(saddle_grad, x0, 0.1, 200, radius=1e-3,
                                       grad_threshold=1e-3, wait=10, seed=0)
    assert torch.equal(again.iterates, pgd.iterates)  # seeded


def test_perturbed_gd_single_run_and_plain_gd_agree() -> None:
    x0 = torch.tensor([1.0, 0.5], dtype=F64)
    res = perturbed_gradient_descent(saddle_grad, x0, 0.1, 5, radius=0.0,
                                     grad_threshold=0.0, wait=0, seed=0)
    x = x0.clone()
    for k in range(5):
        x = x - 0.1 * saddle_grad(x)
        assert torch.allclose(res.iterates[k + 1], x)
    assert res.iterates.shape == (6, 2) and int(res.stopped_at) == -1


def test_perturbed_gd_freezes_runs_that_escape_to_infinity() -> None:
    cubic = lambda x: torch.stack([2 * x[..., 0], 3 * x[..., 1] ** 2], -1)  # noqa: E731
    x0 = torch.tensor([[0.0, -0.5], [0.0, 0.5]], dtype=F64)
    res = perturbed_gradient_descent(cubic, x0, 0.1, 100, radius=0.0, grad_threshold=0.0,
                                     wait=0, seed=0, max_norm=10.0)
    assert res.stopped_at[0] > 0 and res.stopped_at[1] == -1
    assert torch.isfinite(res.iterates).all()
    with pytest.raises(FloatingPointError, match="diverged"):
        perturbed_gradient_descent(cubic, x0, 0.1, 100, radius=0.0, grad_threshold=0.0,
                                   wait=0, seed=0)


def test_perturbed_gd_bad_inputs() -> None:
    x0 = torch.zeros(2, dtype=F64)
    with pytest.raises(ValueError, match="radius must be >= 0"):
        perturbed_gradient_descent(saddle_grad, x0, 0.1, 5, radius=-1.0, grad_threshold=0.1,
                                   wait=1, seed=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        perturbed_gradient_descent(saddle_grad, x0, 0.0, 5, radius=0.1, grad_threshold=0.1,
                                   wait=1, seed=0)
    with pytest.raises(ValueError, match="x0 must contain only finite"):
        perturbed_gradient_descent(saddle_grad, torch.tensor([math.nan, 0.0], dtype=F64), 0.1,
                                   5, radius=0.1, grad_threshold=0.1, wait=1, seed=0)
    with pytest.raises(TypeError, match="grad must be callable"):
        perturbed_gradient_descent(None, x0, 0.1, 5, radius=0.1, grad_threshold=0.1, wait=1,
                                   seed=0)


def test_strict_saddle_report_accepts_functions_that_cannot_be_vmapped() -> None:
    M = torch.diag(torch.tensor([2.0, 1.0], dtype=F64))
    pts = grid(-1.0, 1.0, 5)
    mins = pca_stationary_points(M).points[1:3]
    plain = strict_saddle_report(lambda x: 0.5 * ((M - torch.outer(x, x)) ** 2).sum(), pts,
                                 0.1, 0.5, 0.3, minima=mins)
    checked = strict_saddle_report(lambda x: pca_loss(M, x), pts, 0.1, 0.5, 0.3, minima=mins)
    assert torch.allclose(plain.grad_norm, checked.grad_norm)
    assert torch.allclose(plain.lambda_min, checked.lambda_min)


def test_perturbed_gd_per_run_radius() -> None:
    x0 = torch.zeros(3, 2, dtype=F64)
    res = perturbed_gradient_descent(saddle_grad, x0, 0.1, 300,
                                     radius=torch.tensor([0.0, 1e-3, 1e-2], dtype=F64),
                                     grad_threshold=1e-3, wait=10, seed=1)
    assert int(res.n_perturbations[0]) == 0 and torch.equal(res.iterates[-1, 0], x0[0])
    assert (res.n_perturbations[1:] > 0).all()
    assert (res.iterates[-1, 1:, 1].abs() > 0.9).all()
    with pytest.raises(ValueError, match="radius must have shape"):
        perturbed_gradient_descent(saddle_grad, x0, 0.1, 3, radius=torch.zeros(2, dtype=F64),
                                   grad_threshold=1e-3, wait=1, seed=0)


@pytest.mark.parametrize("small_work", [0, 10**9])
def test_matrix_completion_gradient_paths_agree(small_work: int) -> None:
    """The CSR path (large problems) and the scatter-add path (small ones) give one gradient."""
    _, M = incoherent_ground_truth(12, 4)
    mask = sample_mask(12, 0.4, 5)
    Ms = M[None].repeat(3, 1, 1)
    masks = sample_mask(12, 0.4, 6, batch=3)
    X = torch.randn(3, 12, dtype=F64, generator=torch.Generator().manual_seed(7))
    f = lambda y: dense_mc(M, mask, y)  # noqa: E731
    for mc, pts, refs in [
        (MatrixCompletion(M, mask), X, torch.stack([torch.func.grad(f)(y) for y in X])),
        (MatrixCompletion(M, mask), X[0], torch.func.grad(f)(X[0])),
        (MatrixCompletion(Ms, masks), X, torch.stack(
            [torch.func.grad(lambda y, b=b: dense_mc(M, masks[b], y))(X[b]) for b in range(3)])),
    ]:
        mc.small_work = small_work
        assert torch.allclose(mc.grad(pts), refs, atol=1e-12)


def test_more_bad_inputs():
    D = torch.float64
    with pytest.raises(ValueError, match="at least one row"):
        pca_stationary_points(torch.zeros(0, 0, dtype=D))
    with pytest.raises(ValueError, match="tol"):
        pca_stationary_points(torch.eye(2, dtype=D), tol=-1.0)
    A = torch.eye(3, dtype=D)
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
        project_observed(A, [[True] * 3] * 3)
    with pytest.raises(TypeError, match="torch.bool"):
        project_observed(A, torch.ones(3, 3))
    lower = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be symmetric"):
        project_observed(A, lower)
    with pytest.raises(ValueError, match="at least one row"):
        MatrixCompletion(torch.zeros(0, 0, dtype=D), torch.zeros(0, 0, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
        MatrixCompletion(A, None)  # type: ignore[arg-type]
    mask = torch.ones(3, 3, dtype=torch.bool)
    mc = MatrixCompletion(A, mask)
    with pytest.raises(ValueError, match="device"):
        mc.grad(torch.empty(3, dtype=D, device="meta"))
    batch = MatrixCompletion(torch.stack([A, A]), torch.stack([mask, mask]))
    with pytest.raises(ValueError, match="single problem"):
        batch.hessian(torch.zeros(3, dtype=D))
    with pytest.raises(ValueError, match="radius"):
        perturbed_gradient_descent(mc.grad, torch.zeros(2, 3, dtype=D), 0.1, 3,
                                   radius=torch.tensor([0.1, -0.1], dtype=D), grad_threshold=1e-3,
                                   wait=1, seed=0)


def test_pca_stationary_points_of_a_negative_semidefinite_matrix():
    # M ⪯ 0: the only stationary point is the origin, and it is the global minimum
    M = -torch.eye(3, dtype=torch.float64)
    pts = pca_stationary_points(M)
    assert pts.points.shape == (1, 3) and bool(pts.is_global_min.all())
    assert float(pts.points.abs().max()) == 0.0
