"""nnopt.dkm against direct network computations in float64 (Balboni ch. 5, appendix A)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nnopt.dkm import (KernelLayer, are_independent, conv_kernel, descending_path, dkm_outputs,
                           fc_independent_points, fc_kernel, is_full_rank, last_layer_solution,
                           min_singular_ratio,
                           minor_sum_of_squares, points_matrix, recurrent_features,
                           recurrent_independent_points, recurrent_kernel)

D = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_fc_layer_is_linear_map_of_activated_input():
    g = gen(0)
    s, t, n = 5, 3, 7
    W = torch.randn(t, s, dtype=D, generator=g)
    basis = fc_independent_points(s, 1.0, 0.0)                # σ(γ^i) = tanh(1) e_i
    alpha = (W / torch.tanh(torch.tensor(1.0, dtype=D))).T    # Σ_i α_ij σ(γ^i) = W_j
    x = torch.randn(n, s, dtype=D, generator=g)
    layer = KernelLayer("fc", basis, out_dim=t)
    lin = torch.nn.Linear(s, t, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(W)
    torch.testing.assert_close(layer(alpha, x), lin(torch.tanh(x)), rtol=1e-12, atol=1e-12)


def test_fc_kernel_closed_form():
    x = torch.tensor([[0.0, 1.0]], dtype=D)
    x2 = torch.tensor([[2.0, -1.0]], dtype=D)
    expected = torch.tanh(torch.tensor(1.0, dtype=D)) * torch.tanh(torch.tensor(-1.0, dtype=D))
    assert float(fc_kernel(x, x2)) == pytest.approx(float(expected), rel=1e-14)


def test_conv_kernel_against_loops():
    g = gen(1)
    x = torch.randn(3, 2, 3, 4, dtype=D, generator=g)
    x2 = torch.randn(2, 2, 3, 4, dtype=D, generator=g)
    K = conv_kernel(x, x2)
    sx, sx2 = torch.tanh(x), torch.tanh(x2)
    for a in range(3):
        for b in range(2):
            for c in range(2):
                for al in range(5):
                    for be in range(7):
                        ref = sum(sx[a, c, i, j] * sx2[b, c, al - i, be - j]
                                  for i in range(3) for j in range(4)
                                  if 0 <= al - i < 3 and 0 <= be - j < 4)
                        assert float(K[a, b, c, al, be]) == pytest.approx(float(ref), abs=1e-13)


def test_conv_layer_is_depthwise_full_convolution():
    g = gen(2)
    c, w, h, n = 2, 3, 3, 4
    basis = torch.randn(w * h, c, w, h, dtype=D, generator=g)
    filt = torch.randn(c, w, h, dtype=D, generator=g)
    # coefficients shared over positions: Σ_n a_nγ σ(w^n)_γ = filter_γ
    feats = torch.tanh(basis).reshape(w * h, c, w * h)
    a = torch.stack([torch.linalg.solve(feats[:, ch].T, filt[ch].reshape(-1)) for ch in range(c)], 1)
    layer = KernelLayer("conv", basis)
    alpha = a[:, :, None].expand(w * h, c, (2 * w - 1) * (2 * h - 1)).reshape(w * h, -1)
    x = torch.randn(n, c, w, h, dtype=D, generator=g)
    ref = F.conv2d(torch.tanh(x), filt.flip(-1, -2)[:, None], padding=(w - 1, h - 1), groups=c)
    torch.testing.assert_close(layer(alpha, x), ref.reshape(n, -1), rtol=1e-11, atol=1e-11)


def test_recurrent_features_match_torch_rnn():
    g = gen(3)
    rnn = torch.nn.RNN(5, 3, bias=False, batch_first=True).double()
    x = torch.randn(4, 6, 5, dtype=D, generator=g)
    out, _ = rnn(x)
    z = x @ rnn.weight_ih_l0.T
    torch.testing.assert_close(recurrent_features(z, rnn.weight_hh_l0.detach()), out.detach(),
                               rtol=1e-12, atol=1e-12)


def test_recurrent_layer_is_rnn_readout_on_lifted_basis():
    g = gen(4)
    q, T, n = 3, 5, 4
    u = 0.5 * torch.randn(q, q, dtype=D, generator=g)
    gamma = fc_independent_points(q, 1.0, 0.0)
    basis = recurrent_independent_points(gamma, u, T)
    torch.testing.assert_close(recurrent_features(basis, u), torch.tanh(gamma)[:, None].expand(q, T, q))
    V = torch.randn(q, q, dtype=D, generator=g)
    a = (V / torch.tanh(torch.tensor(1.0, dtype=D))).T          # (p, q), shared over time
    alpha = a.repeat(1, T)                                      # output j = t q + i
    z = torch.randn(n, T, q, dtype=D, generator=g)
    layer = KernelLayer("recurrent", basis, u=u)
    ref = recurrent_features(z, u) @ V.T
    torch.testing.assert_close(layer(alpha, z), ref.reshape(n, -1), rtol=1e-12, atol=1e-12)


def test_recurrent_kernel_is_stepwise_dot_product():
    g = gen(5)
    z, z2 = torch.randn(2, 3, 2, dtype=D, generator=g), torch.randn(3, 3, 2, dtype=D, generator=g)
    u = torch.randn(2, 2, dtype=D, generator=g)
    k = recurrent_kernel(z, z2, u)
    a, b = recurrent_features(z, u), recurrent_features(z2, u)
    assert float(k[1, 2, 1]) == pytest.approx(float(a[1, 1] @ b[2, 1]), rel=1e-13)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["fc", "recurrent"]), p=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_fc_and_recurrent_points_matrices_are_symmetric_psd(kind, p, seed):
    g = gen(seed)
    if kind == "fc":
        layer = KernelLayer("fc", torch.randn(p, 3, dtype=D, generator=g), out_dim=2)
    else:
        layer = KernelLayer("recurrent", torch.randn(p, 3, 2, dtype=D, generator=g),
                            u=torch.randn(2, 2, dtype=D, generator=g))
    H = points_matrix(layer)
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-12)
    assert float(torch.linalg.eigvalsh(H)[0]) >= -1e-10 * max(1.0, float(H.abs().max()))


@settings(max_examples=20, deadline=None)
@given(w=st.integers(2, 3), h=st.integers(1, 3), c=st.integers(1, 2), seed=st.integers(0, 10_000))
def test_conv_points_matrix_symmetric_but_indefinite_and_singular(w, h, c, seed):
    """Def. 3 is symmetric in (x, x') but not positive semidefinite; Lemma 14 fails."""
    m = w * h * c
    basis = torch.randn(m, c, w, h, dtype=D, generator=gen(seed))
    H = points_matrix(KernelLayer("conv", basis))
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-12)
    assert float(torch.linalg.eigvalsh(H)[0]) < -1e-8
    # each corner output sees one pixel product: a rank-one block, so the rank is below m t
    assert int(torch.linalg.matrix_rank(H)) < H.shape[0]


def test_lemma9_points_independent_except_on_exceptional_line():
    s = 4
    layer = KernelLayer("fc", fc_independent_points(s, 1.0, 0.2), out_dim=2)
    assert are_independent(layer)
    # σ(r) = -(s-1) σ(c): r = atanh(-(s-1) tanh(c))
    c = 0.2
    r = float(torch.atanh(-(s - 1) * torch.tanh(torch.tensor(c, dtype=D))))
    bad = KernelLayer("fc", fc_independent_points(s, r, c), out_dim=2)
    assert not are_independent(bad)
    det = torch.linalg.det(fc_kernel(bad.basis, bad.basis))
    assert abs(float(det)) < 1e-12


def test_last_layer_full_rank_generic_and_exceptional():
    g = gen(6)
    N, s, p = 5, 6, 7
    x = torch.randn(N, s, dtype=D, generator=g)
    l1 = KernelLayer("fc", torch.randn(p, s, dtype=D, generator=g), out_dim=N + 1)
    l2 = KernelLayer("fc", torch.randn(p, N + 1, dtype=D, generator=g), out_dim=2)
    a1 = torch.randn(p, N + 1, dtype=D, generator=g)
    z1 = l1(a1, x)
    assert is_full_rank(l2.matrix(z1))
    # exceptional coefficients: make z_0 = z_1 by removing the direction separating them
    d = (l1.values(x)[:, 0, 0] - l1.values(x)[:, 1, 0])
    a_bad = a1 - torch.outer(d, d @ a1) / (d @ d)
    z_bad = l1(a_bad, x)
    torch.testing.assert_close(z_bad[0], z_bad[1])
    assert not is_full_rank(l2.matrix(z_bad))
    a_fix = a_bad + 1e-3 * torch.randn(p, N + 1, dtype=D, generator=g)
    assert is_full_rank(l2.matrix(l1(a_fix, x)))


def test_minor_sum_of_squares_cauchy_binet():
    R = torch.randn(7, 3, dtype=D, generator=gen(7))
    assert minor_sum_of_squares(R) == pytest.approx(minor_sum_of_squares(R, brute_force=True), rel=1e-10)
    R[:, 2] = R[:, 0]
    assert abs(minor_sum_of_squares(R)) < 1e-10


def test_descending_path_reaches_target_monotonically():
    g = gen(8)
    N, t, p = 4, 2, 6
    H = torch.randn(p * t, N * t, dtype=D, generator=g)
    alpha = torch.randn(p, t, dtype=D, generator=g)
    G = torch.randn(N, t, dtype=D, generator=g)
    path = descending_path(H, alpha, G, n_steps=51)
    assert path.residual < 1e-12
    losses = ((path.outputs - G) ** 2).sum(dim=(1, 2))
    assert bool((losses[1:] <= losses[:-1] + 1e-12).all()) and float(losses[-1]) < 1e-20
    torch.testing.assert_close(path.outputs[0], (alpha.reshape(-1) @ H).reshape(N, t))


def test_last_layer_solution_is_the_least_norm_least_squares_point():
    g = gen(10)
    N, t, p = 5, 2, 3                                   # pt = 6 < Nt = 10: V H = G has no exact solution
    H = torch.randn(p * t, N * t, dtype=D, generator=g)
    G = torch.randn(N, t, dtype=D, generator=g)
    V, residual = last_layer_solution(H, G)
    assert V.shape == (p, t)
    r = V.reshape(-1) @ H - G.reshape(-1)
    assert float((H @ r).norm()) < 1e-12                # normal equations: stationary in α
    assert residual == pytest.approx(float(r.norm() / G.norm()), rel=1e-12) and residual > 0.1
    H_wide = torch.cat([H, H], dim=0)                   # rank-deficient rows: many minimisers
    V2, _ = last_layer_solution(H_wide, G)              # least norm splits V evenly between copies
    torch.testing.assert_close(V2.reshape(-1), torch.cat([V.reshape(-1), V.reshape(-1)]) / 2)
    with pytest.raises(ValueError, match="multiple of t = 3"):
        last_layer_solution(torch.zeros(4, 6, dtype=D), torch.zeros(2, 3, dtype=D))
    with pytest.raises(TypeError, match="dtype"):
        last_layer_solution(H, G.float())


def test_dkm_outputs_composes_layers():
    g = gen(9)
    x = torch.randn(3, 4, dtype=D, generator=g)
    l1 = KernelLayer("fc", torch.randn(5, 4, dtype=D, generator=g), out_dim=6)
    l2 = KernelLayer("fc", torch.randn(5, 6, dtype=D, generator=g), out_dim=2)
    a1, a2 = torch.randn(5, 6, dtype=D, generator=g), torch.randn(5, 2, dtype=D, generator=g)
    X1, X2 = dkm_outputs([l1, l2], [a1, a2], x)
    torch.testing.assert_close(X2, l2(a2, l1(a1, x)))
    torch.testing.assert_close(X2.reshape(-1), a2.reshape(-1) @ l2.matrix(X1))


def test_bad_inputs():
    x = torch.zeros(2, 3, dtype=D)
    with pytest.raises(TypeError, match="x"):
        fc_kernel([[0.0]], x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x2"):
        fc_kernel(x, torch.zeros(2, 4, dtype=D))
    with pytest.raises(TypeError, match="activation"):
        fc_kernel(x, x, activation=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x"):
        conv_kernel(x, x)
    with pytest.raises(ValueError, match="u"):
        recurrent_features(torch.zeros(1, 2, 3, dtype=D), torch.zeros(2, 2, dtype=D))
    with pytest.raises(ValueError, match="kind"):
        KernelLayer("pool", x)
    with pytest.raises(ValueError, match="u"):
        KernelLayer("recurrent", torch.zeros(1, 2, 3, dtype=D))
    with pytest.raises(TypeError, match="out_dim"):
        KernelLayer("fc", x, out_dim=2.5)  # type: ignore[arg-type]
    layer = KernelLayer("fc", x, out_dim=2)
    with pytest.raises(ValueError, match="alpha"):
        layer(torch.zeros(3, 2, dtype=D), x)
    with pytest.raises(ValueError, match="matrix"):
        min_singular_ratio(torch.zeros(2, 3, dtype=D))
    with pytest.raises(ValueError, match="rtol"):
        is_full_rank(torch.eye(2, dtype=D), rtol=-1.0)
    with pytest.raises(ValueError, match="s"):
        fc_independent_points(0, 1.0, 0.0)
    with pytest.raises(ValueError, match="target"):
        descending_path(torch.eye(4, dtype=D), torch.zeros(2, 2, dtype=D), torch.zeros(3, 1, dtype=D))
    with pytest.raises(ValueError, match="same number of columns"):
        descending_path(torch.eye(4, dtype=D), torch.zeros(4, 1, dtype=D), torch.zeros(2, 2, dtype=D))
    with pytest.raises(ValueError, match="alphas"):
        dkm_outputs([layer], [], x)


def test_more_bad_inputs():
    imgs = torch.zeros(2, 1, 3, 3, dtype=D)
    with pytest.raises(ValueError, match="x2 must have images"):
        conv_kernel(imgs, torch.zeros(2, 1, 4, 3, dtype=D))
    z, u = torch.zeros(2, 4, 3, dtype=D), torch.zeros(3, 3, dtype=D)
    with pytest.raises(ValueError, match="z2 must have sequences"):
        recurrent_kernel(z, torch.zeros(2, 5, 3, dtype=D), u)
    layer = KernelLayer("fc", torch.zeros(2, 3, dtype=D), out_dim=2)
    with pytest.raises(TypeError, match="layers"):
        dkm_outputs([layer, "fc"], [torch.zeros(2, 2, dtype=D)] * 2, torch.zeros(1, 3, dtype=D))
    with pytest.raises(TypeError, match="layer"):
        points_matrix("fc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least as many rows"):
        minor_sum_of_squares(torch.zeros(2, 3, dtype=D))
    with pytest.raises(ValueError, match="at most 16 rows"):
        minor_sum_of_squares(torch.zeros(17, 2, dtype=D), brute_force=True)
    with pytest.raises(ValueError, match="target must have 4 entries"):
        last_layer_solution(torch.eye(4, dtype=D), torch.zeros(3, 1, dtype=D))
    with pytest.raises(ValueError, match="multiple of t"):
        last_layer_solution(torch.zeros(3, 4, dtype=D), torch.zeros(2, 2, dtype=D))
    with pytest.raises(ValueError, match="alpha must have 4 entries"):
        descending_path(torch.eye(4, dtype=D), torch.zeros(3, 1, dtype=D), torch.zeros(4, 1, dtype=D))


@pytest.mark.parametrize("kind", ["fc", "conv", "recurrent"])
def test_layer_solve_equals_last_layer_solution_on_the_full_matrix(kind):
    g = torch.Generator().manual_seed(7)
    if kind == "fc":
        layer, z = KernelLayer("fc", torch.randn(8, 6, generator=g, dtype=D), out_dim=4), torch.randn(5, 6, generator=g, dtype=D)
    elif kind == "conv":
        layer, z = KernelLayer("conv", torch.randn(6, 1, 2, 2, generator=g, dtype=D)), torch.randn(3, 1, 2, 2, generator=g, dtype=D)
    else:
        u = 0.3 * torch.randn(2, 2, generator=g, dtype=D)
        layer, z = KernelLayer("recurrent", torch.randn(6, 3, 2, generator=g, dtype=D), u=u), torch.randn(4, 3, 2, generator=g, dtype=D)
    target = torch.randn(z.shape[0], layer.n_outputs, generator=g, dtype=D)
    alpha, residual = layer.solve(z, target)
    V, residual_full = last_layer_solution(layer.matrix(z), target)
    torch.testing.assert_close(alpha, V, rtol=1e-9, atol=1e-10)
    assert abs(residual - residual_full) < 1e-10
    # an fc layer with more basis points and features than data interpolates; a target of the wrong shape or dtype is refused
    if kind == "fc":
        assert residual < 1e-10
        torch.testing.assert_close(layer(alpha, z), target)
        with pytest.raises(ValueError, match="target must have shape"):
            layer.solve(z, target[:, :2])
        with pytest.raises(TypeError, match="same dtype"):
            layer.solve(z, target.float())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_solves_of_a_zero_target_report_zero_residual(dtype):
    """The relative residual of a zero target is 0, not 0/0 (float32 cannot hold a 1e-300 floor)."""
    layer = KernelLayer("fc", torch.randn(6, 4, generator=torch.Generator().manual_seed(3), dtype=dtype), out_dim=2)
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(4), dtype=dtype)
    zero = torch.zeros(3, 2, dtype=dtype)
    alpha, residual = layer.solve(z, zero)
    assert residual == 0.0 and not alpha.any()
    V, residual_full = last_layer_solution(layer.matrix(z), zero)
    assert residual_full == 0.0 and not V.any()
