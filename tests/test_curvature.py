"""Tests for nnopt.curvature: certified sharpness against torch.func.hessian + eigvalsh (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nnopt import autodiff, curvature, linalg

D = torch.float64


def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - target) ** 2).sum(dim=-1).mean()


class Quadratic(nn.Module):
    """L(w) = ½ wᵀ A w − bᵀw for any input: its Hessian is exactly A."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("A", A)
        self.register_buffer("b", torch.zeros(A.shape[0], dtype=A.dtype) if b is None else b)
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(A.shape[0], generator=g, dtype=A.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = 0.5 * self.w @ self.A @ self.w - self.b @ self.w
        return value.expand(x.shape[0])


def mean_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return out.mean()


def sym_with_spectrum(eigs, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(eigs)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    return q @ torch.diag(torch.tensor(eigs, dtype=D)) @ q.T


def net_problem(seed=0, width=8, n=20):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                        nn.Linear(width, 2)).to(D)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(n, 3, generator=g, dtype=D)
    y = torch.randn(n, 2, generator=g, dtype=D)
    return net, x, y


def dense_eigvals(net, loss_fn, x, y):
    p = autodiff.params_of(net)
    w = autodiff.flatten(p)
    H = torch.func.hessian(
        lambda wf: loss_fn(torch.func.functional_call(net, autodiff.unflatten(wf, p), (x,)), y))(w)
    return torch.linalg.eigvalsh(H), H


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_top_eigenvalue_matches_dense(seed):
    net, x, y = net_problem(seed)
    ev, _ = dense_eigvals(net, mse, x, y)
    lam = float(ev[-1])
    for tol in (1e-3, 1e-8):
        r = curvature.top_hessian_eigenvalue(net, mse, x, y, tol=tol, seed=seed)
        assert r.converged
        assert r.value <= lam + 1e-10  # Rayleigh-Ritz
        assert abs(r.value - lam) <= r.error_bound + 1e-12
        assert abs(r.value - lam) <= tol * abs(r.value)


def test_residual_is_the_true_residual():
    net, x, y = net_problem(5)
    _, H = dense_eigvals(net, mse, x, y)
    r = curvature.top_hessian_eigenvalue(net, mse, x, y, tol=1e-4, seed=0)
    u = r.vector
    assert float(u.norm()) == pytest.approx(1.0, abs=1e-12)
    assert float(u @ H @ u) == pytest.approx(r.value, rel=1e-10)
    assert float((H @ u - r.value * u).norm()) == pytest.approx(r.residual, rel=1e-6, abs=1e-12)


def test_indefinite_quadratic_with_dominant_negative_eigenvalue():
    eigs = [-30.0, -5.0] + torch.linspace(-1.0, 2.5, 27).tolist() + [3.0]
    A = sym_with_spectrum(eigs, 1)
    model = Quadratic(A)
    x = torch.zeros(4, 1, dtype=D)
    y = torch.zeros(4, dtype=D)
    ev, H = dense_eigvals(model, mean_loss, x, y)
    torch.testing.assert_close(H, A)
    assert float(ev[0]) < -9 * float(ev[-1])  # |λmin| ≫ λmax
    r = curvature.top_hessian_eigenvalue(model, mean_loss, x, y, tol=1e-6, seed=0)
    assert r.converged and r.value == pytest.approx(3.0, rel=1e-6)
    # power iteration on the same operator is fooled
    op = curvature.HessianOperator(model, mean_loss, x, y)
    p = linalg.power_iteration(op, tol=1e-8, seed=0)
    assert p.value == pytest.approx(-30.0, rel=1e-6)


def test_indefinite_network_hessian():
    # far from a minimum the residual term makes a network's Hessian indefinite
    net, x, y = net_problem(7)
    y = 10 * y
    ev, _ = dense_eigvals(net, mse, x, y)
    assert float(ev[0]) < 0 < float(ev[-1])
    r = curvature.top_hessian_eigenvalue(net, mse, x, y, tol=1e-6, seed=3)
    assert r.converged and abs(r.value - float(ev[-1])) <= 1e-6 * abs(r.value)


def test_top_k_matches_dense():
    net, x, y = net_problem(4)
    ev, _ = dense_eigvals(net, mse, x, y)
    r = curvature.top_hessian_eigenvalues(net, mse, x, y, 3, tol=1e-6, seed=0)
    assert r.converged and r.values.shape == (3,)
    torch.testing.assert_close(r.values, ev.flip(0)[:3], rtol=1e-6, atol=1e-9)
    for i in range(3):
        assert abs(float(r.values[i]) - float(ev.flip(0)[i])) <= float(r.residuals[i]) + 1e-12


def test_methods_agree_and_module_untouched():
    net, x, y = net_problem(6)
    before = autodiff.flatten(autodiff.params_of(net))
    n = before.numel()
    v = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=D)
    a = curvature.HessianOperator(net, mse, x, y).matvec(v)
    b = curvature.HessianOperator(net, mse, x, y, method="forward-over-reverse").matvec(v)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a, autodiff.hvp(net, mse, x, y, v), rtol=1e-10, atol=1e-12)
    assert curvature.hvp is autodiff.hvp
    assert torch.equal(autodiff.flatten(autodiff.params_of(net)), before)


def test_warm_start_needs_fewer_products():
    net, x, y = net_problem(8, width=12, n=40)
    cold = curvature.top_hessian_eigenvalue(net, mse, x, y, tol=1e-5, seed=0)
    warm = curvature.top_hessian_eigenvalue(net, mse, x, y, tol=1e-5, warm_start=cold)
    P = autodiff.num_params(autodiff.params_of(net))
    assert cold.n_hvp >= min(curvature.COLD_MIN_HVP, P)  # no convergence test before that
    assert warm.converged and warm.n_hvp < cold.n_hvp
    assert warm.value == pytest.approx(cold.value, rel=2e-5)


def test_unconverged_is_reported():
    net, x, y = net_problem(9, width=12, n=40)
    r = curvature.top_hessian_eigenvalue(net, mse, x, y, tol=1e-12, seed=0, max_hvp=2)
    assert r.n_hvp == 2 and not r.converged
    assert r.error_bound > 1e-12 * abs(r.value)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), tol_exp=st.integers(3, 8), max_hvp=st.integers(1, 30))
def test_converged_never_with_error_above_tol(seed, tol_exp, max_hvp):
    # tol <= 1e-3, the regime the library is for. With a much looser tol (1e-2) and two top
    # eigenvalues within ~10% of each other, a start vector nearly orthogonal to the top
    # eigenvector can certify the second one (see the top_hessian_eigenvalue docstring).
    net, x, y = net_problem(seed % 5, width=5, n=10)
    ev, _ = dense_eigvals(net, mse, x, y)
    tol = 10.0 ** (-tol_exp)
    r = curvature.top_hessian_eigenvalue(net, mse, x, y, tol=tol, seed=seed, max_hvp=max_hvp)
    # the certificate: some eigenvalue within the bound, and theta never above lambda_max
    assert float((ev - r.value).abs().min()) <= r.error_bound + 1e-12
    assert r.value <= float(ev[-1]) + 1e-12
    if r.converged:
        assert abs(r.value - float(ev[-1])) <= tol * abs(r.value) + 1e-12


def test_gd_with_sharpness_on_a_quadratic():
    A = sym_with_spectrum([4.0, 2.0, 1.0, 0.5], 2)
    model = Quadratic(A, b=torch.ones(4, dtype=D))
    x, y = torch.zeros(2, 1, dtype=D), torch.zeros(2, dtype=D)
    good = curvature.gd_with_sharpness(model, mean_loss, x, y, lr=1.9 / 4.0, steps=200, every=50)
    assert not good.diverged and good.loss[-1] < good.loss[0]
    assert all(abs(s - 4.0) <= 1e-3 * 4.0 for s in good.sharpness)
    assert good.sharpness_steps == [0, 50, 100, 150] and all(good.converged)
    assert good.n_hvp[1] <= good.n_hvp[0]
    bad = curvature.gd_with_sharpness(model, mean_loss, x, y, lr=2.1 / 4.0, steps=2000, every=None)
    assert bad.diverged or bad.loss[-1] > 1e6 * abs(bad.loss[0])
    # the module itself never moved
    assert torch.equal(model.w, Quadratic(A).w)


def test_bad_inputs():
    net, x, y = net_problem(0)
    with pytest.raises(ValueError, match="tol"):
        curvature.top_hessian_eigenvalue(net, mse, x, y, tol=0.0)
    with pytest.raises(TypeError, match="tol"):
        curvature.top_hessian_eigenvalue(net, mse, x, y, tol="small")
    with pytest.raises(ValueError, match="warm_start"):
        curvature.top_hessian_eigenvalue(net, mse, x, y, warm_start=torch.zeros(3, dtype=D))
    with pytest.raises(TypeError, match="warm_start"):
        curvature.top_hessian_eigenvalue(net, mse, x, y, warm_start=[1.0])
    with pytest.raises(ValueError, match="seed"):
        curvature.top_hessian_eigenvalue(net, mse, x, y, seed=-1)
    with pytest.raises(TypeError, match="model"):
        curvature.top_hessian_eigenvalue("net", mse, x, y)
    with pytest.raises(ValueError, match="x"):
        curvature.top_hessian_eigenvalue(net, mse, x * math.inf, y)
    with pytest.raises(ValueError, match="y"):
        curvature.top_hessian_eigenvalue(net, mse, x, y[:-1])
    with pytest.raises(ValueError, match="method"):
        curvature.top_hessian_eigenvalue(net, mse, x, y, method="finite-differences")
    with pytest.raises(ValueError, match="k"):
        curvature.top_hessian_eigenvalues(net, mse, x, y, 10**6)
    with pytest.raises(ValueError, match="scalar"):
        curvature.top_hessian_eigenvalue(net, lambda o, t: o - t, x, y)
    with pytest.raises(ValueError, match="lr"):
        curvature.gd_with_sharpness(net, mse, x, y, lr=-0.1, steps=3)
    with pytest.raises(TypeError, match="x"):
        curvature.top_hessian_eigenvalue(net, mse, x.to(torch.int64), y)


def test_hvp_to_gradient_macs_counts():
    from fractions import Fraction
    # one layer: no input gradient and no input tangent, so both need 2 m₁
    assert curvature.hvp_to_gradient_macs([64, 10]) == 1
    # 64-200-200-10: m = 12800, 40000, 2000 → (25600 + 252000) / (25600 + 126000)
    assert curvature.hvp_to_gradient_macs([64, 200, 200, 10]) == Fraction(277600, 151600)
    assert curvature.hvp_to_gradient_macs((3072, 200, 200, 10)) == Fraction(1480800, 1354800)
    # the limits: the first layer dominates → 1, the later layers dominate → 2
    assert 1 < curvature.hvp_to_gradient_macs([10**6, 2, 2]) < 1 + 1e-5
    assert curvature.hvp_to_gradient_macs([1, 1000, 1000]) == Fraction(2000 + 6 * 10**6, 2000 + 3 * 10**6)
    assert 1.999 < curvature.hvp_to_gradient_macs([1, 1000, 1000]) < 2


def test_hvp_to_gradient_macs_bad_inputs():
    with pytest.raises(ValueError, match="widths"):
        curvature.hvp_to_gradient_macs([64])
    with pytest.raises(ValueError, match=r"widths\[1\]"):
        curvature.hvp_to_gradient_macs([64, 0, 10])
    with pytest.raises(TypeError, match="widths"):
        curvature.hvp_to_gradient_macs("64")
    with pytest.raises(TypeError, match=r"widths\[1\]"):
        curvature.hvp_to_gradient_macs([64, 2.5])


def test_warm_start_forms_and_zero_start():
    net, x, y = net_problem(3)
    first = curvature.top_hessian_eigenvalue(net, mse, x, y, tol=1e-8, seed=0)
    as_dict = autodiff.unflatten(first.vector, autodiff.params_of(net))
    from_dict = curvature.top_hessian_eigenvalue(net, mse, x, y, tol=1e-8, warm_start=as_dict)
    from_flat = curvature.top_hessian_eigenvalue(net, mse, x, y, tol=1e-8, warm_start=first.vector)
    assert from_dict.value == from_flat.value and from_dict.n_hvp == from_flat.n_hvp
    assert from_dict.n_matvecs == from_dict.n_hvp
    with pytest.raises(ValueError, match="nonzero"):
        curvature.top_hessian_eigenvalue(net, mse, x, y, warm_start=torch.zeros_like(first.vector))


def test_hessian_of_a_loss_linear_in_the_parameters_is_zero():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(3, 2)).to(D)
    x = torch.randn(5, 3, dtype=D)
    for method in ("double-backward", "layerwise"):
        op = curvature.HessianOperator(lin, mean_loss, x, torch.zeros(5, 2, dtype=D), method=method)
        v = torch.randn(op.size, dtype=D)
        assert torch.equal(op.matvec(v), torch.zeros_like(v)), method
    r = curvature.top_hessian_eigenvalue(lin, mean_loss, x, torch.zeros(5, 2, dtype=D),
                                         method="double-backward")
    assert r.value == 0.0 and r.relative_error_bound == math.inf


def test_gd_with_sharpness_stops_when_a_tracked_step_overflows():
    A = sym_with_spectrum([4.0, 2.0, 1.0, 0.5], 2)
    model = Quadratic(A, b=torch.ones(4, dtype=D))
    x, y = torch.zeros(2, 1, dtype=D), torch.zeros(2, dtype=D)
    run = curvature.gd_with_sharpness(model, mean_loss, x, y, lr=100.0, steps=1000, every=1)
    assert run.diverged and len(run.loss) < 1000 and math.isnan(run.loss[-1])
    assert all(math.isfinite(v) for v in run.loss[:-1])
    assert len(run.sharpness) == len(run.loss) - 1  # the overflowed step has no estimate


def test_matmul_macs_measures_the_layer_count():
    """The layerwise HVP and a gradient perform exactly the products hvp_to_gradient_macs counts."""
    from fractions import Fraction
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3)).to(D)
    x = torch.randn(11, 6, dtype=D)
    y = torch.randn(11, 3, dtype=D)
    op = curvature.HessianOperator(net, mse, x, y)
    assert op.method == "layerwise"
    v = torch.randn(op.size, dtype=D)
    hvp = curvature.matmul_macs(lambda: op.matvec(v))
    grad = curvature.matmul_macs(lambda: autodiff.gradient(net, mse, x, y, flat=True))
    n, m = 11, [6 * 7, 7 * 5, 5 * 3]
    assert grad == n * (2 * m[0] + 3 * (m[1] + m[2]))        # forward, weight and input gradients
    assert Fraction(hvp, grad) == curvature.hvp_to_gradient_macs([6, 7, 5, 3])
    # shapes: (n × k)(k × m) → nkm, batched and matrix-vector products too, nothing for elementwise
    assert curvature.matmul_macs(lambda: torch.ones(3, 4) @ torch.ones(4, 5)) == 60
    assert curvature.matmul_macs(lambda: torch.ones(2, 3, 4) @ torch.ones(2, 4, 5)) == 120
    assert curvature.matmul_macs(lambda: torch.ones(3, 4) @ torch.ones(4)) == 12
    assert curvature.matmul_macs(lambda: torch.ones(3, 4) * 2) == 0
    with pytest.raises(TypeError, match="fn"):
        curvature.matmul_macs(42)


def test_lanczos_bound_covers_the_computed_residual():
    """The recurrence's |β_m e_mᵀ s| is exact only in exact arithmetic: the reported bound adds a
    rounding allowance, so it is never below the directly computed residual (float32 and 64)."""
    for dtype in (torch.float32, torch.float64):
        A = sym_with_spectrum([float(i) for i in range(1, 31)], 4).to(dtype)
        r = linalg.lanczos(A, tol=1e-12, seed=0, max_iter=30)    # the Krylov space becomes the whole space
        true = float(torch.linalg.vector_norm(A @ r.vector - r.value * r.vector))
        assert r.residual >= true > 0
        assert r.residual - true <= 2 * 30 * torch.finfo(dtype).eps * 30   # within twice the allowance m·ε·max|θ|


def test_gd_with_sharpness_callback():
    A = sym_with_spectrum([4.0, 2.0, 1.0, 0.5], 2)
    model = Quadratic(A, b=torch.ones(4, dtype=D))
    x, y = torch.zeros(2, 1, dtype=D), torch.zeros(2, dtype=D)
    seen = []
    trace = curvature.gd_with_sharpness(model, mean_loss, x, y, lr=0.1, steps=60, every=20,
                                        callback=lambda t, w, r: seen.append((t, w["w"].clone(), r.value)))
    assert [t for t, _, _ in seen] == trace.sharpness_steps == [0, 20, 40]
    assert [v for _, _, v in seen] == trace.sharpness
    assert torch.equal(seen[0][1], Quadratic(A).w) and not torch.equal(seen[1][1], seen[0][1])
    with pytest.raises(TypeError, match="callback"):
        curvature.gd_with_sharpness(model, mean_loss, x, y, lr=0.1, steps=3, callback=1)
