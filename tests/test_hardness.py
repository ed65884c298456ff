"""nnopt.hardness against independent references: itertools enumeration, dense Hadamard
matrices, autograd through explicit risks, and exact evaluation on every hypercube point."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nnopt.hardness import (GradientVariance, gradient_variance, gram_matrix, hat,
                            halfspace_intersection_network, hypercube, is_orthonormal_class,
                            no_instance_lower_bound, parity, parity_class, parity_gradient_variance,
                            parity_network, per_example_gradients, subset_sum_brute_force,
                            subset_sum_dp, subset_sum_loss, walsh_hadamard)

D = torch.float64


# --------------------------------------------------------------------------- SUBSET-SUM


def reference_subsets(a, t):
    """All indicator tuples with Σ wᵢ aᵢ = t, by itertools (independent of the numpy route)."""
    return sorted(w for w in itertools.product((0, 1), repeat=len(a))
                  if sum(wi * ai for wi, ai in zip(w, a)) == t)


@settings(max_examples=60, deadline=None)
@given(a=st.lists(st.integers(0, 15), min_size=1, max_size=8), t=st.integers(0, 60))
def test_solvers_agree_with_enumeration(a, t):
    want = reference_subsets(a, t)
    bf = subset_sum_brute_force(a, t)
    dp = subset_sum_dp(a, t)
    got = sorted(tuple(int(v) for v in row) for row in bf.solutions)
    assert got == want
    assert bf.feasible == dp.feasible == bool(want)
    gap = min(abs(sum(wi * ai for wi, ai in zip(w, a)) - t)
              for w in itertools.product((0, 1), repeat=len(a)))
    assert bf.closest_gap == dp.closest_gap == gap
    if dp.feasible:
        assert dp.solutions.shape == (1, len(a))
        assert sum(a[i] for i in dp.subset) == t
        assert tuple(int(v) for v in dp.solutions[0]) in want
    else:
        assert dp.subset is None and dp.solutions.shape == (0, len(a))


def test_dp_handles_large_n_beyond_brute_force():
    rng = np.random.default_rng(0)
    a = [int(v) for v in rng.integers(1, 1000, size=60)]
    chosen = rng.random(60) < 0.5
    t = int(np.sum(np.array(a)[chosen]))
    res = subset_sum_dp(a, t)
    assert res.feasible and sum(a[i] for i in res.subset) == t
    # all even numbers can never sum to an odd target
    even = [2 * v for v in a]
    odd = subset_sum_dp(even, 2 * t + 1)
    assert not odd.feasible and odd.closest_gap == 1
    with pytest.raises(ValueError, match="n <= 26"):
        subset_sum_brute_force(a, t)


@settings(max_examples=40, deadline=None)
@given(a=st.lists(st.integers(0, 9), min_size=1, max_size=6), t=st.integers(0, 30),
       seed=st.integers(0, 10_000))
def test_loss_matches_formula_and_vanishes_exactly_on_solutions(a, t, seed):
    L = subset_sum_loss(a, t)
    n = len(a)
    w = torch.randn(5, n, generator=torch.Generator().manual_seed(seed), dtype=D)
    av = torch.tensor(a, dtype=D)
    want = (w @ av - t) ** 2 + ((w * (1 - w)) ** 2).sum(1)
    assert torch.allclose(L(w), want, rtol=1e-12, atol=1e-12)
    corners = torch.tensor(list(itertools.product((0, 1), repeat=n)), dtype=D)
    values = L(corners)
    is_solution = (corners @ av) == t
    assert torch.all(values[is_solution] == 0)
    assert torch.all(values[~is_solution] >= 1)  # an integer misfit, squared
    assert bool(torch.all(L(w) >= 0))


def test_loss_gradient_matches_autograd_of_explicit_formula():
    a, t = [3, 5, 7, 11], 15
    L = subset_sum_loss(a, t)
    w = torch.tensor([0.3, -0.2, 1.4, 0.9], dtype=D, requires_grad=True)
    (g,) = torch.autograd.grad(L(w), w)
    av = torch.tensor(a, dtype=D)
    wd = w.detach()
    # d/dw of (a·w − t)² + Σ (w − w²)²: 2(a·w − t)a + 2(w − w²)(1 − 2w)
    want = 2 * (av @ wd - t) * av + 2 * (wd - wd**2) * (1 - 2 * wd)
    assert torch.allclose(g, want, rtol=1e-12)


@pytest.mark.parametrize("a,t", [([2, 4, 6], 5), ([3, 3], 1), ([5], 3), ([1, 2], 4)])
def test_no_instance_minimum_is_above_the_bound(a, t):
    assert not subset_sum_brute_force(a, t).feasible
    L = subset_sum_loss(a, t)
    bound = no_instance_lower_bound(a)
    assert bound == 1.0 / (1.0 + 4.0 * sum(v * v for v in a))
    # dense grid (n <= 3) plus polishing by L-BFGS from the best grid points
    n = len(a)
    axis = torch.linspace(-0.5, 1.5, 81 if n <= 2 else 31, dtype=D)
    grid = torch.cartesian_prod(*([axis] * n)).reshape(-1, n)
    vals = L(grid)
    assert float(vals.min()) >= bound
    for idx in torch.argsort(vals)[:3]:
        w = grid[idx].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([w], max_iter=100, tolerance_grad=1e-14, tolerance_change=1e-16)

        def closure():
            opt.zero_grad()
            loss = L(w)
            loss.backward()
            return loss

        opt.step(closure)
        assert float(L(w.detach())) >= bound


def test_subset_sum_bad_inputs():
    with pytest.raises(TypeError, match="a"):
        subset_sum_loss([1.5, 2], 3)
    with pytest.raises(ValueError, match=r"a\[1\]"):
        subset_sum_loss([1, -2], 3)
    with pytest.raises(ValueError, match="a"):
        subset_sum_loss([], 3)
    with pytest.raises(TypeError, match="a"):
        subset_sum_loss(torch.tensor([1.0, 2.0]), 3)
    with pytest.raises(TypeError, match="a"):
        subset_sum_loss(7, 3)
    with pytest.raises(TypeError, match="t"):
        subset_sum_loss([1, 2], 2.5)
    with pytest.raises(TypeError, match="t"):
        subset_sum_dp([1, 2], True)
    with pytest.raises(ValueError, match="t"):
        subset_sum_brute_force([1, 2], -1)
    with pytest.raises(TypeError, match="a"):
        subset_sum_dp(np.array([1.0, 2.0]), 1)
    L = subset_sum_loss([1, 2, 3], 3)
    with pytest.raises(ValueError, match="w"):
        L(torch.zeros(4, dtype=D))
    with pytest.raises(TypeError, match="w"):
        L(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="w"):
        L(torch.tensor([0.0, float("nan"), 1.0], dtype=D))
    with pytest.raises(TypeError, match="w"):
        L([0.0, 1.0, 1.0])
    # accepted spellings of natural numbers
    assert subset_sum_dp(torch.tensor([1, 2, 3]), 5).feasible
    assert subset_sum_dp(np.array([1, 2, 3]), 6).feasible
    assert subset_sum_dp([0, 0], 0).feasible


# --------------------------------------------------------------------------- parities


@pytest.mark.parametrize("d", [1, 2, 3, 5, 8])
def test_parity_class_is_orthonormal_and_matches_definition(d):
    F = parity_class(d)
    x = hypercube(d)
    for k in range(0, 2**d, max(1, 2**d // 7)):
        v = x[k]
        want = torch.tensor([(-1.0) ** int(v @ xi) for xi in x], dtype=D)
        assert torch.equal(F[k], want)
    assert is_orthonormal_class(F)
    assert torch.allclose(gram_matrix(F), torch.eye(2**d, dtype=D), atol=1e-12)


def test_hypercube_layout_and_signed_version():
    x = hypercube(3)
    assert x.shape == (8, 3)
    assert torch.equal(x[6], torch.tensor([0.0, 1.0, 1.0], dtype=D))  # 6 = 0b110, LSB first
    assert torch.equal(hypercube(3, signed=True), 1 - 2 * x)
    assert len({tuple(r.tolist()) for r in x}) == 8


def test_non_orthonormal_class_is_detected_and_weights_are_used():
    F = parity_class(3)
    G = F.clone()
    G[1] = 0.5 * (F[1] + F[2])  # unit norm lost, and correlated with row 2
    assert not is_orthonormal_class(G)
    w = torch.rand(8, dtype=D, generator=torch.Generator().manual_seed(0))
    w = w / w.sum()
    assert torch.allclose(gram_matrix(F, w), (F * w) @ F.T)
    assert not is_orthonormal_class(F, w)  # parities are orthonormal only for uniform ρ


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 9), k=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_walsh_hadamard_matches_dense_transform(d, k, seed):
    vals = torch.randn(2**d, k, generator=torch.Generator().manual_seed(seed), dtype=D)
    want = parity_class(d) @ vals / 2**d
    assert torch.allclose(walsh_hadamard(vals), want, atol=1e-12)
    assert torch.allclose(walsh_hadamard(vals[:, 0]), want[:, 0], atol=1e-12)


def test_parity_bad_inputs():
    x = hypercube(3)
    with pytest.raises(ValueError, match="v"):
        parity(torch.tensor([0.0, 2.0, 1.0], dtype=D), x)
    with pytest.raises(ValueError, match="x"):
        parity(torch.tensor([0.0, 1.0, 1.0], dtype=D), 2 * x)
    with pytest.raises(ValueError, match="v"):
        parity(torch.tensor([0.0, 1.0], dtype=D), x)
    with pytest.raises(TypeError, match="x"):
        parity(torch.tensor([0.0, 1.0, 1.0], dtype=D), [[0, 1, 1]])
    with pytest.raises(ValueError, match="d"):
        hypercube(0)
    with pytest.raises(TypeError, match="d"):
        hypercube(2.0)
    with pytest.raises(ValueError, match="values"):
        walsh_hadamard(torch.zeros(6, dtype=D))
    with pytest.raises(ValueError, match="values"):
        walsh_hadamard(torch.tensor([1.0, float("inf")], dtype=D))
    with pytest.raises(ValueError, match="weights"):
        gram_matrix(parity_class(2), torch.full((4,), 0.5, dtype=D))
    with pytest.raises(ValueError, match="weights"):
        gram_matrix(parity_class(2), torch.ones(3, dtype=D) / 3)


# --------------------------------------------------------------------------- gradient variance


def small_net(d, width, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, 1)).double()


def test_per_example_gradients_match_autograd_and_leave_parameters_alone():
    net = small_net(3, 4, 0)
    before = [p.detach().clone() for p in net.parameters()]
    x = hypercube(3)
    h, J = per_example_gradients(net, x)
    for i in range(8):
        net.zero_grad()
        net(x[i:i + 1]).sum().backward()
        want = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
        assert torch.allclose(J[i], want, rtol=1e-12, atol=1e-14)
    assert torch.allclose(h, net(x).squeeze(1).detach())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def explicit_risk_gradients(net, x, targets):
    """∇_θ E_x[(h − f)²] for each target by autograd on the explicit risk."""
    grads = []
    for f in targets:
        net.zero_grad()
        ((net(x).squeeze(1) - f) ** 2).mean().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
    return torch.stack(grads)


@pytest.mark.parametrize("d", [2, 3, 4])
def test_gradient_variance_matches_autograd_reference(d):
    net = small_net(d, 5, d)
    x = hypercube(d)
    F = parity_class(d)
    grads = explicit_risk_gradients(net, x, F)
    want = float(((grads - grads.mean(0)) ** 2).sum(1).mean())
    h, J = per_example_gradients(net, x)
    res = gradient_variance(h, J, F)
    assert isinstance(res, GradientVariance)
    assert res.variance == pytest.approx(want, rel=1e-10)
    assert parity_gradient_variance(net, d).variance == pytest.approx(want, rel=1e-10)
    gsq = float((J**2).sum(1).mean())
    assert res.grad_sq_norm == pytest.approx(gsq, rel=1e-12)
    assert res.bound == pytest.approx(4 * gsq / 2**d, rel=1e-12)
    assert res.bound_as_printed == pytest.approx(gsq / 2**d, rel=1e-12)
    # Theorem 5 with the factor 4 holds; the printed bound fails for these nets
    assert res.variance <= res.bound * (1 + 1e-12)
    assert res.variance > res.bound_as_printed


@settings(max_examples=20, deadline=None)
@given(d=st.integers(2, 6), m=st.integers(1, 10), seed=st.integers(0, 10_000))
def test_theorem5_bound_holds_for_any_orthonormal_subclass(d, m, seed):
    """Any m of the 2^d parities form an orthonormal class: the variance is <= 4E‖∇h‖²/m."""
    g = torch.Generator().manual_seed(seed)
    net = small_net(d, 3, seed)
    x = hypercube(d)
    rows = torch.randperm(2**d, generator=g)[: min(m, 2**d)]
    F = parity_class(d)[rows]
    h, J = per_example_gradients(net, x)
    res = gradient_variance(h, J, F)
    assert res.class_size == F.shape[0]
    assert res.variance <= res.bound * (1 + 1e-10) + 1e-15


def test_gradient_variance_bad_inputs():
    net = small_net(2, 3, 0)
    x = hypercube(2)
    h, J = per_example_gradients(net, x)
    F = parity_class(2)
    with pytest.raises(ValueError, match="targets"):
        gradient_variance(h, J, F[:, :3])
    with pytest.raises(ValueError, match="J"):
        gradient_variance(h, J[:3], F)
    with pytest.raises(TypeError, match="same dtype"):
        gradient_variance(h.float(), J, F)
    with pytest.raises(ValueError, match="weights"):
        gradient_variance(h, J, F, torch.ones(4, dtype=D))
    with pytest.raises(TypeError, match="model"):
        per_example_gradients(lambda z: z, x)
    with pytest.raises(TypeError, match="model"):
        parity_gradient_variance("net", 2)
    with pytest.raises(ValueError, match="d"):
        parity_gradient_variance(net, 0)
    with pytest.raises(ValueError, match="d"):
        parity_gradient_variance(net, 21)
    with pytest.raises(ValueError, match="x"):
        per_example_gradients(net, torch.zeros(3, dtype=D))


# --------------------------------------------------------------------------- exact ReLU nets


def test_hat_function_values():
    z = torch.tensor([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 3.0], dtype=D)
    want = torch.tensor([0.0, 0.0, 0.5, 1.0, 0.5, 0.0, 0.0, 0.0], dtype=D)
    assert torch.equal(hat(z), want)
    with pytest.raises(TypeError, match="z"):
        hat([0.0])


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 6, 7, 8])
def test_parity_network_is_exact_on_every_point(d):
    x = hypercube(d)
    vs = hypercube(d) if d <= 6 else hypercube(d)[:: 2 ** (d - 5) - 1]  # all v for d <= 6
    for v in vs:
        net = parity_network(v)
        assert net.width == 3 * (d + 1)
        assert torch.equal(net(x), parity(v, x))


def test_parity_network_is_a_triangle_wave_between_integers():
    d = 4
    v = torch.ones(d, dtype=D)
    net = parity_network(v)
    s = torch.linspace(0, d, 401, dtype=D)  # vᵀx = s along x = (s/d)·1
    x = (s / d)[:, None] * v[None, :]
    tri = 2 * torch.abs(torch.remainder(s, 2) - 1) - 1  # 1 at even s, -1 at odd s, linear between
    assert torch.allclose(net(x), tri, atol=1e-12)


def test_parity_network_path_norm_is_quadratic_in_d():
    ratios = []
    for d in range(1, 30):
        pn = parity_network(torch.ones(d, dtype=D)).path_norm()
        # Σ_i (|2i−1| + 2·2i + (2i+1) + 4·2d) = 8d(d+1) + 4(d+1)² ... recomputed independently
        want = sum((2 * d + abs(-2 * i + 1)) + 2 * (2 * d + 2 * i) + (2 * d + 2 * i + 1)
                   for i in range(d + 1))
        assert pn == pytest.approx(want, rel=1e-12)
        ratios.append(pn / d**2)
    assert max(ratios) <= 26 and ratios[-1] < 12.5  # path norm ≈ 12d², i.e. O(d²) as Wu states


def all_halfspace_networks(d, k, seed, wmax=3, bmax=4):
    rng = np.random.default_rng(seed)
    W = rng.integers(0, wmax + 1, size=(k, d))
    b = rng.integers(0, bmax + 1, size=k)
    return W, b


@pytest.mark.parametrize("d,k,seed", [(2, 1, 0), (3, 2, 1), (4, 3, 2), (6, 5, 3), (8, 4, 4),
                                      (10, 7, 5)])
def test_halfspace_network_sign_is_the_intersection_on_every_point(d, k, seed):
    W, b = all_halfspace_networks(d, k, seed)
    g = halfspace_intersection_network(W.tolist(), b.tolist())
    x = hypercube(d, signed=True)
    c = x @ torch.tensor(W.T, dtype=D) - torch.tensor(b, dtype=D) - 0.5  # (2^d, k)
    assert bool((c.abs() >= 0.5).all())
    intersection = (c > 0).all(1)
    out = g(x)
    assert bool((out != 0).all())
    assert torch.equal(out > 0, intersection)
    assert g.width == 2 * k
    # both classes occur for some instance of the family (the check is not vacuous overall)


def test_halfspace_network_both_labels_occur():
    g = halfspace_intersection_network([[1, 1, 0], [0, 1, 1]], [0, 0])
    x = hypercube(3, signed=True)
    out = g(x)
    want = ((x[:, 0] + x[:, 1] > 0.5) & (x[:, 1] + x[:, 2] > 0.5))
    assert torch.equal(out > 0, want)
    assert 0 < int(want.sum()) < 8
    # exact values: +1/(6k) inside, <= -1/(3k) outside
    assert torch.allclose(out[want], torch.full_like(out[want], 1 / 12))
    assert bool((out[~want] <= -1 / 6 + 1e-12).all())


def test_halfspace_network_bad_inputs():
    with pytest.raises(ValueError, match="W"):
        halfspace_intersection_network([[1, -1]], [0])
    with pytest.raises(ValueError, match="b"):
        halfspace_intersection_network([[1, 1]], [0, 1])
    with pytest.raises(TypeError, match="W"):
        halfspace_intersection_network(torch.ones(2, 2), [0, 0])
    with pytest.raises(ValueError, match="W"):
        halfspace_intersection_network([], [])
    with pytest.raises(ValueError, match="W"):
        halfspace_intersection_network([[1, 1], [1]], [0, 0])
    with pytest.raises(TypeError, match="b"):
        halfspace_intersection_network([[1, 1]], [0.5])
    with pytest.raises(ValueError, match="v"):
        parity_network(torch.tensor([0.0, 3.0], dtype=D))
    with pytest.raises(ValueError, match="x"):
        parity_network(torch.ones(3, dtype=D))(torch.ones(2, 2, dtype=D))


def test_more_bad_inputs():
    with pytest.raises(ValueError, match="1-dimensional"):
        subset_sum_dp(torch.tensor([[1, 2]]), 3)
    with pytest.raises(ValueError, match="1-dimensional"):
        subset_sum_dp(np.array([[1, 2]]), 3)
    with pytest.raises(ValueError, match=r"a\[1\] must be a natural number"):
        subset_sum_dp(torch.tensor([1, -2]), 3)
    with pytest.raises(ValueError, match="d must be <= 24"):
        hypercube(25)
    with pytest.raises(TypeError, match="dtype"):
        hypercube(3, dtype="float64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="parameters"):
        per_example_gradients(nn.ReLU(), torch.zeros(2, 3, dtype=D))
    with pytest.raises(ValueError, match="one output per example"):
        per_example_gradients(nn.Linear(3, 2).double(), torch.zeros(2, 3, dtype=D))
    with pytest.raises(ValueError, match="2-dimensional"):
        halfspace_intersection_network(torch.tensor([1, 2]), [1])
    with pytest.raises(TypeError, match="W must be"):
        halfspace_intersection_network("W", [1])
    with pytest.raises(ValueError, match=r"W\[0\] must hold natural numbers"):
        halfspace_intersection_network(torch.tensor([[1, -1]]), [1])
