"""nnopt.ntk against a dense float64 reference: the full Jacobian from torch.func.jacrev."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nnopt.ntk import (
    AntisymmetricPair,
    ScaledModel,
    empirical_ntk,
    is_structured_supported,
    kappa_f,
    ntk_matrix,
    ntk_vector_product,
    second_derivative_norm,
)

D = torch.float64


# ------------------------------------------------------------------ dense references


def dense_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The (n·O, p) Jacobian of model(x).reshape(-1) w.r.t. all parameters (jacrev)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p):
        return torch.func.functional_call(model, p, (x,)).reshape(-1)

    jac = torch.func.jacrev(f)(params)
    return torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1)


def dense_ntk(model, x1, x2=None):
    x2 = x1 if x2 is None else x2
    return dense_jacobian(model, x1) @ dense_jacobian(model, x2).T


def dense_hessians(model, x):
    """Hessians ∇²f_i (p × p) of each stacked output, by torch.func.hessian."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    flat = torch.cat([v.reshape(-1) for v in params.values()])

    def f(w):
        d, i = {}, 0
        for k, v in params.items():
            d[k] = w[i : i + v.numel()].reshape(v.shape)
            i += v.numel()
        return torch.func.functional_call(model, d, (x,)).reshape(-1)

    return torch.func.jacfwd(torch.func.jacrev(f))(flat)  # (n·O, p, p)


def mlp(act: nn.Module, outputs: int, widths=(5, 7, 6), seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), act]
    layers.append(nn.Linear(widths[-1], outputs))
    return nn.Sequential(*layers).to(D)


class ConvNet(nn.Module):
    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, outputs)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


class WithUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 2)
        self.unused = nn.Linear(3, 3)  # never called: its Jacobian block is zero

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _x(n, d=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=D)


# ------------------------------------------------------------------ the kernel


@pytest.mark.parametrize("act", [nn.Tanh(), nn.ReLU()], ids=["tanh", "relu"])
@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("implementation", ["structured", "generic", "auto"])
def test_mlp_kernel_matches_jacrev(act, outputs, implementation):
    model = mlp(act, outputs)
    x1, x2 = _x(6), _x(4, seed=2)
    theta = empirical_ntk(model, x1, x2, implementation=implementation)
    expected_shape = (6, 4) if outputs == 1 else (6, 4, outputs, outputs)
    assert theta.shape == expected_shape
    assert torch.allclose(ntk_matrix(theta), dense_ntk(model, x1, x2), rtol=1e-12, atol=1e-12)
    sym = empirical_ntk(model, x1, implementation=implementation)
    ref = dense_ntk(model, x1)
    assert torch.allclose(ntk_matrix(sym), ref, rtol=1e-12, atol=1e-12)
    # the kernel is a Gram matrix: symmetric positive semi-definite
    assert torch.linalg.eigvalsh(ntk_matrix(sym)).min() > -1e-10 * ref.abs().max()


def test_structured_handles_flatten_nested_and_trailing_activation():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Flatten(), nn.Sequential(nn.Linear(6, 8), nn.GELU()), nn.Linear(8, 2, bias=False), nn.Tanh()
    ).to(D)
    x = torch.randn(5, 2, 3, dtype=D)
    assert is_structured_supported(model)
    theta = empirical_ntk(model, x, implementation="structured")
    assert torch.allclose(ntk_matrix(theta), dense_ntk(model, x), atol=1e-12)


@pytest.mark.parametrize("outputs", [1, 2])
def test_conv_net_generic_and_auto(outputs):
    torch.manual_seed(4)
    model = ConvNet(outputs).to(D)
    x1 = torch.randn(5, 2, 4, 4, dtype=D)
    x2 = torch.randn(3, 2, 4, 4, dtype=D)
    assert not is_structured_supported(model)
    for impl in ("generic", "auto"):
        theta = empirical_ntk(model, x1, x2, implementation=impl)
        assert torch.allclose(ntk_matrix(theta), dense_ntk(model, x1, x2), atol=1e-12)
    with pytest.raises(ValueError, match="implementation"):
        empirical_ntk(model, x1, implementation="structured")


def test_unused_parameter_contributes_nothing():
    torch.manual_seed(5)
    model = WithUnused().to(D)
    x = _x(5, d=4)
    theta = empirical_ntk(model, x, implementation="generic")
    assert torch.allclose(ntk_matrix(theta), dense_ntk(model, x), atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7])
def test_chunking_does_not_change_the_kernel(chunk_size):
    model = mlp(nn.Tanh(), 2)
    x1, x2 = _x(7), _x(5, seed=3)
    full = empirical_ntk(model, x1, x2, implementation="generic")
    chunked = empirical_ntk(model, x1, x2, implementation="generic", chunk_size=chunk_size)
    assert torch.allclose(chunked, full, atol=1e-13)
    sym = empirical_ntk(model, x1, implementation="generic", chunk_size=chunk_size)
    assert torch.allclose(ntk_matrix(sym), dense_ntk(model, x1), atol=1e-12)


def test_memory_budget_forces_chunks_with_same_result():
    model = mlp(nn.Tanh(), 2)
    x = _x(9)
    tiny = empirical_ntk(model, x, implementation="generic", max_memory_bytes=1)
    assert torch.allclose(ntk_matrix(tiny), dense_ntk(model, x), atol=1e-12)


def test_model_is_not_modified():
    model = mlp(nn.ReLU(), 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    empirical_ntk(model, _x(4), implementation="generic")
    empirical_ntk(model, _x(4), implementation="structured")
    second_derivative_norm(model, _x(2), max_iter=5, restarts=1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@settings(max_examples=10, deadline=None)
@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    outputs=st.integers(1, 3),
    n1=st.integers(1, 4),
    n2=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_structured_equals_generic_for_any_mlp(widths, outputs, n1, n2, seed):
    model = mlp(nn.Tanh(), outputs, widths=tuple(widths), seed=seed)
    x1, x2 = _x(n1, d=widths[0], seed=seed), _x(n2, d=widths[0], seed=seed + 1)
    s = empirical_ntk(model, x1, x2, implementation="structured")
    g = empirical_ntk(model, x1, x2, implementation="generic")
    assert torch.allclose(s, g, atol=1e-11)


# ------------------------------------------------------------------ NTK-vector products


@pytest.mark.parametrize("outputs", [1, 3])
def test_ntk_vector_product_matches_dense(outputs):
    model = mlp(nn.Tanh(), outputs)
    x = _x(6)
    v = torch.randn(6, outputs, dtype=D, generator=torch.Generator().manual_seed(9))
    got = ntk_vector_product(model, x, v)
    assert got.shape == v.shape
    assert torch.allclose(got.reshape(-1), dense_ntk(model, x) @ v.reshape(-1), atol=1e-12)


# ------------------------------------------------------------------ scaled models, antisymmetric init


def test_antisymmetric_pair_is_zero_with_the_same_kernel():
    base = mlp(nn.Tanh(), 2)
    pair = AntisymmetricPair(base)
    x = _x(5)
    assert torch.equal(pair(x), torch.zeros(5, 2, dtype=D))
    ref = dense_ntk(pair, x)
    assert torch.allclose(ref, dense_ntk(base, x), atol=1e-12)
    for impl in ("structured", "generic"):
        assert torch.allclose(ntk_matrix(empirical_ntk(pair, x, implementation=impl)), ref, atol=1e-12)


def test_scaled_model_kernel_scales_with_alpha_squared():
    base = mlp(nn.ReLU(), 1)
    x = _x(4)
    for alpha in (0.5, 3.0):
        scaled = ScaledModel(base, alpha)
        ref = dense_ntk(scaled, x)
        assert torch.allclose(ref, alpha**2 * dense_ntk(base, x), atol=1e-12)
        for impl in ("structured", "generic"):
            assert torch.allclose(empirical_ntk(scaled, x, implementation=impl), ref, atol=1e-12)
    with pytest.raises(ValueError, match="alpha"):
        ScaledModel(base, 0.0)
    with pytest.raises(TypeError, match="model"):
        ScaledModel("net", 1.0)  # type: ignore[arg-type]


# ------------------------------------------------------------------ ‖D²f‖ and κ_f


def test_second_derivative_norm_single_output_is_hessian_spectral_norm():
    model = mlp(nn.Tanh(), 1, widths=(3, 5))
    x = _x(1, d=3)
    res = second_derivative_norm(model, x, tol=1e-9, restarts=1)
    H = dense_hessians(model, x)[0]
    exact = float(torch.linalg.eigvalsh(H).abs().max())
    assert res.converged
    assert res.n_matvecs > 0
    # the stopping rule is a relative change of 1e-9 in the Rayleigh quotient, whose error is
    # quadratic in the eigenvector error: 1e-7 leaves room for slow convergence near the end
    assert math.isclose(res.value, exact, rel_tol=1e-7)


def test_second_derivative_norm_several_outputs_bounds_and_attainment():
    model = mlp(nn.Tanh(), 2, widths=(3, 4))
    x = _x(3, d=3)
    res = second_derivative_norm(model, x, tol=1e-9, restarts=3)
    H = dense_hessians(model, x)  # (6, p, p)
    norms = torch.linalg.matrix_norm(H, ord=2)
    # lower bounds: each single output (c = e_i) and many random unit c, evaluated densely
    g = torch.Generator().manual_seed(0)
    c = torch.randn(2000, H.shape[0], generator=g, dtype=D)
    c = c / c.norm(dim=1, keepdim=True)
    sampled = torch.linalg.matrix_norm(torch.einsum("ki,ipq->kpq", c, H), ord=2).max()
    lower = max(float(norms.max()), float(sampled))
    upper = float(norms.pow(2).sum().sqrt())  # ‖Σ c_i H_i‖ ≤ ‖c‖ (Σ‖H_i‖²)^½
    assert lower * (1 - 1e-7) <= res.value <= upper * (1 + 1e-7)
    # the value is attained: ‖D²f[u, u]‖ at the returned direction, computed densely
    u = res.direction
    assert math.isclose(float(torch.einsum("p,ipq,q->i", u, H, u).norm()), res.value, rel_tol=1e-12)


def test_kappa_matches_dense_assembly_and_alpha_scaling():
    base = mlp(nn.Tanh(), 1, widths=(3, 6))
    x = _x(4, d=3)
    y = torch.randn(4, 1, dtype=D, generator=torch.Generator().manual_seed(2))
    res = kappa_f(base, x, y, tol=1e-8, restarts=2)
    J = dense_jacobian(base, x)
    df = float(torch.linalg.matrix_norm(J, ord=2))
    with torch.no_grad():
        r = float((y - base(x)).norm())
    assert math.isclose(res.df_norm, df, rel_tol=1e-10)
    assert math.isclose(res.residual_norm, r, rel_tol=1e-12)
    assert math.isclose(res.value, r * res.d2f_norm / df**2, rel_tol=1e-12)
    # eqs 10.44-10.45: with f(w0) = 0, kappa of alpha*f is ||y|| ||D2f|| / (alpha ||Df||^2)
    pair = AntisymmetricPair(base)
    k1 = kappa_f(pair, x, y, tol=1e-8, restarts=2)
    for alpha in (0.1, 10.0):
        # same seeds, same iterates up to the factor alpha: agreement to rounding, not to tol
        ka = kappa_f(ScaledModel(pair, alpha), x, y, tol=1e-8, restarts=2)
        assert math.isclose(ka.value, k1.value / alpha, rel_tol=1e-6)
        assert math.isclose(ka.value, float(y.norm()) * k1.d2f_norm / (alpha * k1.df_norm**2), rel_tol=1e-6)


# ------------------------------------------------------------------ bad inputs


def test_bad_inputs_raise_clear_errors():
    model = mlp(nn.Tanh(), 2)
    x = _x(3)
    with pytest.raises(ValueError, match="x2"):
        empirical_ntk(model, x, _x(3, d=4))
    with pytest.raises(TypeError, match="x1"):
        empirical_ntk(model, torch.ones(3, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="x2"):
        empirical_ntk(model, x, torch.ones(3, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="model"):
        empirical_ntk(nn.Sequential(nn.Tanh()), x)
    with pytest.raises(TypeError, match="model"):
        empirical_ntk(lambda t: t, x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same device"):
        empirical_ntk(model, x, torch.empty(3, 5, dtype=D, device="meta"))
    with pytest.raises(ValueError, match="x1"):
        empirical_ntk(model, torch.empty(3, 5, dtype=D, device="meta"))
    with pytest.raises(TypeError, match="x1"):
        empirical_ntk(model, x.float())
    with pytest.raises(ValueError, match="x1"):
        empirical_ntk(model, torch.full((3, 5), float("nan"), dtype=D))
    with pytest.raises(ValueError, match="x1"):
        empirical_ntk(model, torch.ones(5, dtype=D))
    with pytest.raises(ValueError, match="implementation"):
        empirical_ntk(model, x, implementation="fast")
    with pytest.raises(ValueError, match="chunk_size"):
        empirical_ntk(model, x, implementation="generic", chunk_size=0)
    with pytest.raises(ValueError, match="v"):
        ntk_vector_product(model, x, torch.ones(3, 3, dtype=D))
    with pytest.raises(ValueError, match="y"):
        kappa_f(model, x, torch.ones(3, dtype=D))
    with pytest.raises(ValueError, match="restarts"):
        second_derivative_norm(model, x, restarts=0)


def test_more_bad_inputs():
    model = mlp(nn.Tanh(), 2)
    x = _x(3)
    with pytest.raises(ValueError, match="x1.*empty"):
        empirical_ntk(model, x[:0])
    with pytest.raises(ValueError, match="x2.*empty"):
        empirical_ntk(model, x, x[:0])
    with pytest.raises(TypeError, match="model"):
        AntisymmetricPair("net")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="theta"):
        ntk_matrix(torch.zeros(2, 2, 3, 4, dtype=D))
    with pytest.raises(ValueError, match="theta"):
        ntk_matrix(torch.zeros(2, 3, 4, dtype=D))
