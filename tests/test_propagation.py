"""nnopt.propagation against closed forms (ReLU, linear), Monte Carlo and a wide random network."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnopt import propagation as P

D = torch.float64


def relu_pair(c: float, q: float) -> float:
    """E[relu(u1) relu(u2)], the arc-cosine kernel of degree 1."""
    return q / (2 * math.pi) * (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c)


def test_gauss_hermite_integrates_gaussian_moments_exactly():
    x, w = P.gauss_hermite(20)
    for k, moment in [(0, 1.0), (2, 1.0), (4, 3.0), (6, 15.0), (8, 105.0), (3, 0.0)]:
        assert float((w * x**k).sum()) == pytest.approx(moment, abs=1e-10)
    assert float(P.gaussian_expectation(torch.cos, 40)) == pytest.approx(math.exp(-0.5), abs=1e-14)


@pytest.mark.parametrize("q, w2, b2", [(0.3, 1.0, 0.0), (1.7, 2.5, 0.4), (4.0, 0.6, 1.2)])
def test_q_map_closed_forms_for_relu_and_linear(q, w2, b2):
    assert P.q_map(q, w2, b2, "relu") == pytest.approx(w2 * q / 2 + b2, rel=1e-13)
    assert P.q_map(q, w2, b2, "linear") == pytest.approx(w2 * q + b2, rel=1e-13)


def test_q_map_tanh_against_monte_carlo():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2_000_000, generator=g, dtype=D)
    q, w2, b2 = 0.8, 1.7, 0.05
    mc = w2 * float(torch.tanh(math.sqrt(q) * z).pow(2).mean()) + b2
    assert P.q_map(q, w2, b2) == pytest.approx(mc, abs=3e-3)   # MC standard error ≈ 4e-4


def test_q_map_broadcasts_over_tensors():
    w2 = torch.linspace(0.5, 3.0, 6, dtype=D)
    out = P.q_map(1.0, w2, 0.1)
    assert isinstance(out, torch.Tensor) and out.shape == (6,)
    assert float(out[2]) == pytest.approx(P.q_map(1.0, float(w2[2]), 0.1), rel=1e-14)


@pytest.mark.parametrize("w2, b2", [(0.5, 0.2), (1.5, 0.05), (3.0, 0.3), (2.0, 0.0)])
def test_q_fixed_point_is_fixed_and_attracting(w2, b2):
    q_star = P.q_fixed_point(w2, b2)
    assert P.q_map(q_star, w2, b2) == pytest.approx(q_star, abs=1e-11)
    q = 5.0
    for _ in range(300):
        q = P.q_map(q, w2, b2)
    assert q == pytest.approx(q_star, abs=1e-8)


def test_pair_moment_is_exact_for_polynomials_and_broadcasts():
    """E[u₁u₂] = q c and E[u₁²u₂²] = q²(1 + 2c²) (Isserlis), on a rule of 10 nodes."""
    for c, q in [(-0.7, 0.4), (0.0, 1.0), (0.35, 2.5), (1.0, 1.3)]:
        assert P.pair_moment(lambda u: u, c, q, n_nodes=10) == pytest.approx(q * c, abs=1e-13)
        assert P.pair_moment(torch.square, c, q, n_nodes=10) == pytest.approx(
            q * q * (1 + 2 * c * c), rel=1e-13)
    cs = torch.tensor([-0.5, 0.2, 0.9], dtype=D)
    out = P.pair_moment(lambda u: u, cs, torch.tensor([[1.0], [2.0]], dtype=D), n_nodes=10)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
    torch.testing.assert_close(out, torch.stack([cs, 2 * cs]))


def test_arccos_kernel_endpoints_tensors_and_bad_inputs():
    q = 1.7
    assert P.arccos_kernel(1.0, q) == pytest.approx(q / 2, rel=1e-15)      # E[relu(u)²] = q/2
    assert P.arccos_kernel(0.0, q) == pytest.approx(q / (2 * math.pi), rel=1e-15)   # E[relu(u)]²
    assert P.arccos_kernel(-1.0, q) == pytest.approx(0.0, abs=1e-15)       # relu(u) relu(−u) = 0
    cs = torch.linspace(-1, 1, 9, dtype=D)
    k = P.arccos_kernel(cs)
    assert isinstance(k, torch.Tensor) and bool((k.diff() > 0).all())       # increasing in c
    with pytest.raises(ValueError, match="c must lie"):
        P.arccos_kernel(1.01)
    with pytest.raises(ValueError, match="q"):
        P.arccos_kernel(0.5, -1.0)
    with pytest.raises(TypeError, match="f must be callable"):
        P.pair_moment("relu", 0.5)
    with pytest.raises(ValueError, match="n_nodes"):
        P.pair_moment(torch.relu, 0.5, n_nodes=1)


def test_random_deep_net_leaves_the_global_generator_alone():
    """With a generator, building the net must not advance torch's global random state."""
    state = torch.random.get_rng_state()
    g = torch.Generator().manual_seed(3)
    for weights in ("gaussian", "orthogonal"):
        P.random_deep_net(16, 3, 1.5, 0.1, weights=weights, generator=g)
    assert torch.equal(torch.random.get_rng_state(), state)
    a = P.random_deep_net(8, 2, 1.5, 0.1, generator=torch.Generator().manual_seed(4))
    b = P.random_deep_net(8, 2, 1.5, 0.1, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(p, r) for p, r in zip(a.parameters(), b.parameters()))


def test_q_fixed_point_closed_forms_and_ordered_zero():
    assert P.q_fixed_point(1.2, 0.3, "relu") == pytest.approx(0.3 / (1 - 0.6), rel=1e-14)
    assert P.q_fixed_point(0.5, 0.3, "linear") == pytest.approx(0.6, rel=1e-14)
    assert math.isinf(P.q_fixed_point(2.5, 0.1, "relu"))
    assert P.q_fixed_point(0.9, 0.0) == pytest.approx(0.0, abs=1e-12)   # tanh, no bias, σ_w² < 1


@pytest.mark.parametrize("c", [-0.95, -0.4, 0.0, 0.3, 0.9, 0.999])
def test_relu_c_map_closed_form_matches_quadrature_and_monte_carlo(c):
    w2, b2, q = 1.5, 0.1, 1.3
    want = (w2 * relu_pair(c, q) + b2) / (w2 * q / 2 + b2)
    assert P.c_map(c, w2, b2, "relu", q=q) == pytest.approx(want, abs=1e-14)
    assert P.arccos_kernel(c, q) == pytest.approx(relu_pair(c, q), rel=1e-14)
    # an independent route: the generic tensor-product rule, slow (1/n) because of the kink
    assert P.pair_moment(torch.relu, c, q, n_nodes=300) == pytest.approx(relu_pair(c, q), abs=2.5e-3)
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2, 1_000_000, generator=g, dtype=D)
    u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    assert float((torch.relu(u1) * torch.relu(u2)).mean()) == pytest.approx(relu_pair(c, q), abs=5e-3)


def test_linear_c_map_closed_form():
    for c in (-0.7, 0.0, 0.5):
        assert P.c_map(c, 0.8, 0.2, "linear", q=2.0) == pytest.approx((1.6 * c + 0.2) / 1.8, rel=1e-14)


def test_tanh_c_map_against_monte_carlo():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(2, 2_000_000, generator=g, dtype=D)
    w2, b2, q, c = 2.0, 0.05, 0.9, 0.4
    u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    mc = (w2 * float((torch.tanh(u1) * torch.tanh(u2)).mean()) + b2) / P.q_map(q, w2, b2)
    assert P.c_map(c, w2, b2, q=q) == pytest.approx(mc, abs=3e-3)


@settings(max_examples=40, deadline=None)
@given(c=st.floats(-1.0, 1.0), w2=st.floats(0.1, 5.0), b2=st.floats(0.0, 1.0),
       activation=st.sampled_from(["tanh", "relu", "linear"]), q=st.floats(0.05, 4.0))
def test_c_map_maps_into_interval_and_fixes_one(c, w2, b2, activation, q):
    out = P.c_map(c, w2, b2, activation, q=q)
    assert -1.0 <= out <= 1.0
    assert P.c_map(1.0, w2, b2, activation, q=q) == 1.0


@pytest.mark.parametrize("w2, b2", [(1.3, 0.05), (2.5, 0.2)])
def test_slope_of_c_map_at_one_is_chi1(w2, b2):
    q = P.q_fixed_point(w2, b2)
    h = 1e-4
    slope = (1.0 - P.c_map(1.0 - h, w2, b2, q=q, n_nodes=81)) / h
    assert slope == pytest.approx(P.chi1(w2, b2), rel=2e-3)   # one-sided difference: O(h^(1/2)) terms


def test_chi1_closed_forms_and_critical_lines():
    assert P.chi1(1.4, 0.3, "relu") == pytest.approx(0.7, rel=1e-14)
    assert P.chi1(0.6, 0.3, "linear") == pytest.approx(0.6, rel=1e-14)
    assert P.critical_sigma_w2(0.2, "relu") == pytest.approx(2.0, abs=1e-9)
    assert P.critical_sigma_w2(0.2, "linear") == pytest.approx(1.0, abs=1e-9)
    assert P.critical_sigma_w2(0.0) == pytest.approx(1.0, abs=1e-6)      # tanh, no bias
    b2 = torch.tensor([0.01, 0.05, 0.3], dtype=D)
    w2c = P.critical_sigma_w2(b2)
    assert torch.allclose(torch.as_tensor(P.chi1(w2c, b2)), torch.ones(3, dtype=D), atol=1e-8)
    assert bool((w2c.diff() > 0).all())


def test_depth_scale_matches_the_linearised_c_map():
    w2, b2 = 1.2, 0.05          # ordered: c* = 1, 1 − c shrinks by χ1 per layer near 1
    assert P.correlation_fixed_point(w2, b2) == 1.0
    assert P.correlation_depth_scale(w2, b2) == pytest.approx(-1 / math.log(P.chi1(w2, b2)), rel=1e-12)
    w2 = 3.0                    # chaotic: c* < 1 and the slope of the c-map there is exp(−1/ξ)
    c_star = P.correlation_fixed_point(w2, b2)
    assert 0 < c_star < 1 and P.c_map(c_star, w2, b2) == pytest.approx(c_star, abs=1e-9)
    h = 1e-5
    slope = (P.c_map(c_star + h, w2, b2) - P.c_map(c_star - h, w2, b2)) / (2 * h)
    assert slope == pytest.approx(math.exp(-1 / P.correlation_depth_scale(w2, b2)), rel=1e-5)


def test_orthogonal_deep_net_has_scaled_orthogonal_weights():
    net = P.random_deep_net(50, 3, 2.25, 0.0, weights="orthogonal",
                            generator=torch.Generator().manual_seed(0))
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    for lin in linears:
        W = lin.weight.detach()
        assert torch.allclose(W @ W.T, 2.25 * torch.eye(50, dtype=D), atol=1e-12)


def test_jacobian_of_deep_net_is_product_and_mean_square_singular_value():
    g = torch.Generator().manual_seed(4)
    net = P.random_deep_net(30, 3, 1.5, 0.1, generator=g)
    x = torch.randn(30, generator=g, dtype=D)
    J = P.input_output_jacobian(net, x)
    prod = torch.eye(30, dtype=D)
    h = x
    for lin in net[::2]:
        z = lin(h)
        prod = torch.diag(1 - torch.tanh(z) ** 2) @ lin.weight @ prod
        h = torch.tanh(z)
    assert torch.allclose(J, prod, atol=1e-12)
    assert torch.allclose(J, torch.func.jacrev(net)(x), atol=1e-12)          # the generic path
    wrapped = torch.nn.Sequential(torch.nn.Sequential(*net))                   # not flat: jacrev
    assert torch.allclose(P.input_output_jacobian(wrapped, x), prod, atol=1e-12)
    s = P.input_output_jacobian_singular_values(net, x)
    assert torch.allclose(s, torch.linalg.svdvals(prod), atol=1e-12)
    lin_net = P.random_deep_net(40, 5, 1.0, 0.0, "linear", weights="orthogonal", generator=g)
    s = P.input_output_jacobian_singular_values(lin_net, torch.randn(40, generator=g, dtype=D))
    assert torch.allclose(s, torch.ones(40, dtype=D), atol=1e-12)        # exact isometry


def test_wide_network_follows_q_and_c_recursions():
    g = torch.Generator().manual_seed(5)
    w2, b2, N = 2.0, 0.05, 1500
    net = P.random_deep_net(N, 6, w2, b2, generator=g)
    x1 = torch.randn(N, generator=g, dtype=D)
    x2 = 0.5 * x1 + math.sqrt(0.75) * torch.randn(N, generator=g, dtype=D)
    h = torch.stack([x1, x2])
    q, c = (w2 * 1.0 + b2), (w2 * 0.5 + b2) / (w2 + b2)   # the first layer acts on raw inputs
    for i, layer in enumerate(net):
        with torch.no_grad():
            h = layer(h)
        if i % 2 == 0:
            if i > 0:
                q, c = P.q_map(q_prev, w2, b2), P.c_map(c_prev, w2, b2, q=q_prev)
            qa, qb = float(h[0].detach().pow(2).mean()), float(h[1].detach().pow(2).mean())
            assert (qa + qb) / 2 == pytest.approx(q, rel=0.1)
            assert float(h[0] @ h[1]) / N / math.sqrt(qa * qb) == pytest.approx(c, abs=0.06)
            q_prev, c_prev = q, c


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="activation"):
        P.q_map(1.0, 1.0, 0.0, "sigmoid")
    with pytest.raises(ValueError, match="sigma_w2"):
        P.q_map(1.0, -1.0, 0.0)
    with pytest.raises(TypeError, match="sigma_b2"):
        P.chi1(1.0, "0.1")
    with pytest.raises(ValueError, match="q"):
        P.q_map(-0.5, 1.0, 0.0)
    with pytest.raises(ValueError, match="c must lie"):
        P.c_map(1.5, 1.0, 0.1)
    with pytest.raises(TypeError, match="c must"):
        P.c_map("0.5", 1.0, 0.1)
    with pytest.raises(ValueError, match="infinite"):
        P.c_map(0.5, 2.5, 0.1, "relu")
    with pytest.raises(ValueError, match="n_nodes"):
        P.gauss_hermite(1)
    with pytest.raises(ValueError, match="n_nodes"):
        P.q_map(1.0, 1.0, 0.0, n_nodes=1000)
    with pytest.raises(TypeError, match="f must be callable"):
        P.gaussian_expectation(3.0)
    with pytest.raises(ValueError, match="weights"):
        P.random_deep_net(4, 2, 1.0, 0.0, weights="uniform")
    with pytest.raises(ValueError, match="depth"):
        P.random_deep_net(4, 0, 1.0, 0.0)
    with pytest.raises(TypeError, match="model"):
        P.input_output_jacobian(lambda x: x, torch.zeros(3))
    with pytest.raises(ValueError, match="x must have 1"):
        P.input_output_jacobian(torch.nn.Identity(), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="sigma_b2"):
        P.critical_sigma_w2(torch.tensor([0.1, -0.2]))
