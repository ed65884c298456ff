"""nnopt.pl against closed forms and dense references in float64."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nnopt.ntk import empirical_ntk
from nnopt.pl import (balboni_condition_factor, centred_relu, distance_bound, dual_relu, gd_local_pl,
                      gram_lower_bound, kernel_conditioning, layer_constants, linear_rate_bound,
                      local_pl_coefficient, mlp_feature_shift_bound, ntk_conditioning,
                      pl_product_bound, pl_rate, pl_stability_bound, random_gram_condition,
                      stability_generalization_bound, weak_pl_rate)

D = torch.float64


def spd(n: int, seed: int, lo: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    ev = lo + 3 * torch.rand(n, generator=g, dtype=D)
    return Q @ torch.diag(ev) @ Q.T


def test_local_pl_of_quadratic_closed_form():
    # f(x) = ½ a x², f* = 0: ‖∇f‖² / (2 f) = a² x² / (a x²) = a at every x ≠ 0
    for a, x in [(0.5, 3.0), (2.0, -0.1), (7.0, 1e-3)]:
        grad = torch.tensor([a * x], dtype=D)
        assert local_pl_coefficient(grad, 0.5 * a * x * x) == pytest.approx(a, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_local_pl_of_strongly_convex_quadratic_at_least_lambda_min(n, seed):
    """f(x) = ½ xᵀAx: μ(x) = xᵀA²x / xᵀAx ∈ [λmin(A), λmax(A)] for every x ≠ 0."""
    A = spd(n, seed)
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1), dtype=D)
    ev = torch.linalg.eigvalsh(A)
    mu = local_pl_coefficient(A @ x, 0.5 * x @ A @ x)
    assert float(ev[0]) * (1 - 1e-10) <= mu <= float(ev[-1]) * (1 + 1e-10)


def test_local_pl_with_loss_star_and_tensor_loss():
    grad = torch.tensor([3.0, 4.0], dtype=D)
    assert local_pl_coefficient(grad, torch.tensor(3.5, dtype=D), loss_star=1.0) == pytest.approx(5.0)


def test_rate_bounds_closed_forms():
    assert pl_rate(1.0, 4.0) == pytest.approx(0.75)
    b = linear_rate_bound(2.0, 1.0, 4.0, 3)
    torch.testing.assert_close(b, torch.tensor([2.0, 1.5, 1.125, 0.84375], dtype=D))
    # f = (L/2) x², μ = L: one GD step with 1/L lands on 0, so the distance is exactly |x0|
    L, x0 = 0.5, 3.0
    assert distance_bound(0.5 * L * x0 * x0, L, L) == pytest.approx(abs(x0))


def test_product_bound_reduces_to_lemma_1_for_constant_mu():
    b = pl_product_bound(2.0, torch.full((5,), 1.0, dtype=D), 4.0)
    torch.testing.assert_close(b, linear_rate_bound(2.0, 1.0, 4.0, 5))
    # a coefficient above L clips the factor at 0
    assert float(pl_product_bound(1.0, torch.tensor([5.0], dtype=D), 4.0)[1]) == 0.0


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), seed=st.integers(0, 10_000), steps=st.integers(1, 30))
def test_gd_on_quadratic_obeys_lemma_11_and_lemma_1(n, seed, steps):
    """GD with step 1/L on ½ xᵀAx: ξ_k ≤ Lemma 11 bound ≤ Lemma 1 bound with μ = λmin, L = λmax."""
    A = spd(n, seed)
    ev = torch.linalg.eigvalsh(A)
    lam_min, L = float(ev[0]), float(ev[-1])
    model = nn.Linear(n, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, n, generator=torch.Generator().manual_seed(seed), dtype=D))
    w_before = model.weight.detach().clone()
    C = torch.linalg.cholesky(A)  # A = C Cᵀ: ½ wᵀAw = ½ ‖Cᵀ w‖² = loss on inputs x = Cᵀ
    loss = lambda out, tgt: 0.5 * (out.reshape(-1) ** 2).sum()  # noqa: E731
    tr = gd_local_pl(model, loss, C.T.contiguous(), torch.zeros(n, dtype=D), lr=1 / L, steps=steps)
    assert torch.equal(model.weight, w_before)
    xi0 = float(tr.gaps[0])
    tol = 1e-10 * xi0  # float64 rounding once the gap has collapsed
    live = tr.gaps[:-1] > 1e-8 * xi0  # μ is recorded as 0 once the gap is exactly 0
    assert (tr.mus[live] >= lam_min * (1 - 1e-6)).all()
    bound = pl_product_bound(xi0, tr.mus, L)
    assert (tr.gaps <= bound * (1 + 1e-9) + tol).all()
    assert (bound <= linear_rate_bound(xi0, lam_min, L, steps) * (1 + 1e-9) + tol).all()
    w = tr.params["weight"].reshape(-1)
    assert float((w - w_before.reshape(-1)).norm()) <= distance_bound(float(tr.gaps[0]), lam_min, L) * (1 + 1e-9)


def test_gd_local_pl_stops_where_the_loss_blows_up():
    """Step 3/L on ½ λ w² multiplies the gap by 4 each step: it ends at the first infinite
    loss, recorded once, with one μ per step taken."""
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(1.0)
    x = torch.ones(1, 1, dtype=D)
    loss = lambda out, tgt: 0.5 * (out.reshape(-1) ** 2).sum()  # noqa: E731  (λ = L = 1)
    tr = gd_local_pl(model, loss, x, torch.zeros(1, dtype=D), lr=3.0, steps=2000)
    k = len(tr.mus)
    assert k < 2000 and tr.gaps.shape == (k,) and tr.grad_sq.shape == (k,)
    assert torch.isfinite(tr.gaps[:-1]).all() and not torch.isfinite(tr.gaps[-1])
    torch.testing.assert_close(tr.gaps[1:-1] / tr.gaps[:-2], torch.full((k - 2,), 4.0, dtype=D))
    assert (tr.mus[:-1] == 1.0).all()  # ‖∇f‖² / (2ξ) = λ on a quadratic


def test_kernel_conditioning_against_eigvalsh():
    A = spd(6, 3)
    c = kernel_conditioning(A)
    ev = torch.linalg.eigvalsh(A)
    assert c.lambda_min == pytest.approx(float(ev[0]))
    assert c.lambda_max == pytest.approx(float(ev[-1]))
    assert c.condition_number == pytest.approx(float(ev[-1] / ev[0]))
    assert c.gershgorin_lower <= c.lambda_min and c.lambda_max <= c.gershgorin_upper
    off = A - torch.diag(torch.diagonal(A))
    assert c.max_offdiag_rowsum == pytest.approx(float(off.abs().sum(1).max()))
    assert c.min_diag == pytest.approx(float(torch.diagonal(A).min()))
    assert c.max_offdiag == pytest.approx(float(off.abs().max()))
    assert math.isinf(kernel_conditioning(torch.zeros(2, 2, dtype=D)).condition_number)


def test_ntk_conditioning_matches_jacobian_gram():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    x = torch.randn(5, 3, dtype=D)
    params = dict(model.named_parameters())
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x,)).reshape(-1))(
        {k: v.detach() for k, v in params.items()})
    J = torch.cat([j.reshape(5, -1) for j in jac.values()], dim=1)
    K = J @ J.T
    c = ntk_conditioning(model, x)
    assert c.lambda_min == pytest.approx(float(torch.linalg.eigvalsh(K)[0]), rel=1e-8)
    torch.testing.assert_close(empirical_ntk(model, x), K)


def test_dual_relu_against_quadrature():
    """σ̂(ρ) = E[σ(X)σ(Y)] by 2-D Gauss–Hermite quadrature on a fine grid (independent route)."""
    import numpy as np
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    z = torch.tensor(nodes, dtype=D)
    wt = torch.tensor(weights, dtype=D) / math.sqrt(2 * math.pi)
    sig = centred_relu
    for rho in [-0.9, -0.3, 0.0, 0.4, 0.8, 1.0]:
        X = z[:, None]
        Y = rho * z[:, None] + math.sqrt(1 - rho * rho) * z[None, :]
        ref = float((wt[:, None] * wt[None, :] * sig(X) * sig(Y)).sum())
        assert float(dual_relu(torch.tensor(rho, dtype=D))) == pytest.approx(ref, abs=2e-3)
    assert float(dual_relu(torch.tensor(1.0, dtype=D))) == pytest.approx(1.0)
    assert float(dual_relu(torch.tensor(0.0, dtype=D))) == pytest.approx(0.0, abs=1e-15)


def test_centred_relu_has_zero_mean_unit_variance_and_keeps_dtype():
    """E[σ(Z)] = 0 and E[σ(Z)²] = 1: integrate over z > 0 only, where σ is smooth (Gauss–Legendre)."""
    import numpy as np
    t, w = np.polynomial.legendre.leggauss(200)
    z = torch.tensor(20 * (t + 1) / 2, dtype=D)              # [0, 20]; the tail beyond is < 1e-80
    dens = torch.tensor(10 * w, dtype=D) * torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    at_zero = float(centred_relu(torch.zeros(1, dtype=D)))   # σ on z ≤ 0, probability 1/2
    mean = float((dens * centred_relu(z)).sum()) + 0.5 * at_zero
    second = float((dens * centred_relu(z) ** 2).sum()) + 0.5 * at_zero**2
    assert mean == pytest.approx(0.0, abs=1e-12) and second == pytest.approx(1.0, rel=1e-12)
    assert centred_relu(torch.ones(3, dtype=torch.float32)).dtype == torch.float32
    assert dual_relu(torch.tensor([0.5], dtype=torch.float32)).dtype == torch.float32
    with pytest.raises(TypeError, match="t must be a torch.Tensor"):
        centred_relu([0.5])


def test_random_gram_condition_matches_sampled_wishart():
    g = torch.Generator().manual_seed(0)
    n, w = 100, 1600
    F = torch.randn(n, w, generator=g, dtype=D)
    kappa = kernel_conditioning(F @ F.T).condition_number
    assert kappa == pytest.approx(random_gram_condition(n, w), rel=0.15)
    assert balboni_condition_factor(16, 64) == pytest.approx(1 / (0.25 - 0.125))


def test_lemma_3_closed_forms():
    # ε_A = 0: β = 2G²/(μ(n − 1)); G = 1, μ = 2, n = 5 gives 1/4
    assert pl_stability_bound(0.0, 2.0, 1.0, 5) == pytest.approx(0.25, rel=1e-15)
    # ε_A = 1/2, G = 1, μ = 1, n = 3: 2·√(1/2)·√2 + 2/2 = 3
    assert pl_stability_bound(0.5, 1.0, 1.0, 3) == pytest.approx(3.0, rel=1e-14)
    # β = 0: √(M²/(2nδ)); M = 2, n = 8, δ = 1/4 gives √(4/4) = 1
    assert stability_generalization_bound(0.0, 2.0, 8, 0.25) == pytest.approx(1.0, rel=1e-15)
    assert stability_generalization_bound(1 / 96, 1.0, 8, 0.5) == pytest.approx(math.sqrt(2 / 8), rel=1e-14)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 6), k=st.integers(6, 10), seed=st.integers(0, 10_000),
       size=st.floats(1e-3, 2.0))
def test_gram_lower_bound_holds(n, k, seed, size):
    g = torch.Generator().manual_seed(seed)
    F0 = torch.randn(n, k, generator=g, dtype=D)
    E = torch.randn(n, k, generator=g, dtype=D)
    E = E / torch.linalg.matrix_norm(E, 2) * size
    F = F0 + E
    lam = float(torch.linalg.eigvalsh(F @ F.T)[0])
    assert lam >= gram_lower_bound(F0, size) - 1e-10


def test_gram_lower_bound_first_order_tight():
    # F₀ = I, F = (1 − δ) I: λmin(FFᵀ) = 1 − 2δ + δ² against the bound 1 − 2δ − δ²
    d = 0.3
    F = (1 - d) * torch.eye(2, dtype=D)
    bound = gram_lower_bound(torch.eye(2, dtype=D), d)
    assert bound == pytest.approx(1 - d * (2 + d), rel=1e-14)
    assert float(torch.linalg.eigvalsh(F @ F.T)[0]) - bound == pytest.approx(2 * d * d, rel=1e-12)


@pytest.mark.parametrize("act", [torch.relu, torch.tanh])
def test_feature_shift_bound_dominates_actual_shift(act):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 5, generator=g, dtype=D)
    W0 = [torch.randn(6, 5, generator=g, dtype=D) / 2, torch.randn(4, 6, generator=g, dtype=D) / 2]
    W = [w + 0.1 * torch.randn(w.shape, generator=g, dtype=D) for w in W0]

    def feats(ws):
        h = x
        for w in ws:
            h = act(h @ w.T)
        return h

    bound = mlp_feature_shift_bound(W0, W, x, act)
    assert bool(((feats(W) - feats(W0)).norm(dim=1) <= bound + 1e-12).all())
    # one layer, identity activation, x along the top right singular vector: the bound is attained
    A0 = torch.randn(3, 4, generator=g, dtype=D)
    dA = torch.randn(3, 4, generator=g, dtype=D)
    v = torch.linalg.svd(dA).Vh[0]
    b = mlp_feature_shift_bound([A0], [A0 + dA], v[None], lambda t: t)
    assert float(b[0]) == pytest.approx(float(((A0 + dA) @ v - A0 @ v).norm()), rel=1e-12)


def test_layer_constants_against_dense_jacobians():
    """f(x) = M φ(x) with φ(t) = t²/2 (φ″ = 1): the Jacobian difference for x′ = x + e_j is
    M diag(e_j), of norm ‖M_{:,j}‖, so the smoothness constant is the largest column norm."""
    g = torch.Generator().manual_seed(0)
    M = torch.randn(5, 3, generator=g, dtype=D)
    f = lambda v: M @ (v * v / 2)  # noqa: E731
    x = torch.randn(3, generator=g, dtype=D)
    ratios = []
    for j in range(3):
        e = torch.zeros(3, dtype=D); e[j] = 1e-1
        dJ = torch.func.jacrev(f)(x + e) - torch.func.jacrev(f)(x)
        ratios.append(float(torch.linalg.matrix_norm(dJ, 2)) / float(e.norm()))
    G, L = layer_constants(M, 1.0, 1.0)
    assert L == pytest.approx(max(ratios), rel=1e-12)
    # the printed eq. B.18 (max entry) is smaller; all-ones M gives exactly the factor √p
    assert float(M.abs().max()) < L
    ones = torch.ones(4, 2, dtype=D)
    assert layer_constants(ones, 1.0, 1.0)[1] == pytest.approx(2.0 * float(ones.abs().max()), rel=1e-15)
    # Lipschitz constant: ‖f(x) − f(y)‖ ≤ G ‖x − y‖ for tanh (φ′ ≤ 1, φ″ ≤ 4/(3√3))
    ft = lambda v: M @ torch.tanh(v)  # noqa: E731
    Gt, Lt = layer_constants(M, 1.0, 4 / (3 * math.sqrt(3)))
    for _ in range(20):
        a, b = torch.randn(3, generator=g, dtype=D), torch.randn(3, generator=g, dtype=D)
        assert float((ft(a) - ft(b)).norm()) <= Gt * float((a - b).norm()) + 1e-12
        dJ = torch.func.jacrev(ft)(a) - torch.func.jacrev(ft)(b)
        assert float(torch.linalg.matrix_norm(dJ, 2)) <= Lt * float((a - b).norm()) + 1e-12


def test_weak_pl_rate_closed_form_and_gd():
    assert weak_pl_rate(2.0, 1.0, 0.5, 1.0) == pytest.approx(0.5, rel=1e-15)
    assert weak_pl_rate(10.0, 1.0, 1.0, 1.0) == 0.0
    # f(x) = x⁴/4 is convex, hence weakly 1-PL with x* = 0; L = 3 x² on [−1, 1], so L = 3 there
    x = 0.9
    for _ in range(20):
        xi = x ** 4 / 4
        factor = weak_pl_rate(xi, abs(x), 1.0, 3.0)
        x = x - x ** 3 / 3.0
        assert x ** 4 / 4 <= factor * xi + 1e-15


@pytest.mark.parametrize("call, exc, match", [
    (lambda: local_pl_coefficient([1.0], 1.0), TypeError, "gradient"),
    (lambda: local_pl_coefficient(torch.ones(2), 0.0), ValueError, "loss"),
    (lambda: local_pl_coefficient(torch.ones(2), "a"), TypeError, "loss"),
    (lambda: local_pl_coefficient(torch.ones(2), 1.0, loss_star=math.nan), ValueError, "loss_star"),
    (lambda: pl_rate(2.0, 1.0), ValueError, "mu"),
    (lambda: pl_rate(1.0, -1.0), ValueError, "smoothness"),
    (lambda: linear_rate_bound(1.0, 0.5, 1.0, -1), ValueError, "steps"),
    (lambda: distance_bound(-1.0, 0.5, 1.0), ValueError, "gap0"),
    (lambda: pl_product_bound(1.0, torch.tensor([-0.1]), 1.0), ValueError, "mus"),
    (lambda: pl_product_bound(1.0, torch.ones(2, 2), 1.0), ValueError, "mus"),
    (lambda: kernel_conditioning(torch.ones(2, 3)), ValueError, "gram"),
    (lambda: dual_relu(torch.tensor([1.5])), ValueError, "rho"),
    (lambda: random_gram_condition(10, 10), ValueError, "width"),
    (lambda: balboni_condition_factor(0, 10), ValueError, "n"),
    (lambda: gd_local_pl("net", lambda o, t: o.sum(), torch.ones(1, 1), torch.ones(1), lr=0.1, steps=1),
     TypeError, "model"),
    (lambda: gd_local_pl(nn.Linear(1, 1), lambda o, t: o.sum(), torch.ones(1, 1), torch.ones(1),
                         lr=0.0, steps=1), ValueError, "lr"),
    (lambda: pl_stability_bound(0.1, 0.0, 1.0, 5), ValueError, "mu"),
    (lambda: pl_stability_bound(0.1, 1.0, 1.0, 1), ValueError, "n"),
    (lambda: pl_stability_bound(-0.1, 1.0, 1.0, 5), ValueError, "gap"),
    (lambda: stability_generalization_bound(0.1, 1.0, 5, 1.5), ValueError, "delta"),
    (lambda: stability_generalization_bound(0.1, "M", 5, 0.1), TypeError, "loss_bound"),
    (lambda: gram_lower_bound(torch.ones(3), 0.1), ValueError, "features0"),
    (lambda: gram_lower_bound(torch.ones(2, 2), -1.0), ValueError, "shift"),
    (lambda: mlp_feature_shift_bound([torch.ones(2, 3)], [torch.ones(2, 2)], torch.ones(1, 3)),
     ValueError, "weights"),
    (lambda: mlp_feature_shift_bound("W", [torch.ones(2, 3)], torch.ones(1, 3)), TypeError, "weights0"),
    (lambda: layer_constants([[1.0]], 1.0, 1.0), TypeError, "weight"),
    (lambda: layer_constants(torch.ones(2, 2), -1.0, 1.0), ValueError, "dphi_max"),
    (lambda: weak_pl_rate(1.0, 0.0, 1.0, 1.0), ValueError, "distance"),
])
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
