"""Tests for nnopt.autodiff: HVP, JVP, VJP and gradients against dense float64 references."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nnopt import autodiff

D = torch.float64


def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((out - target) ** 2).mean()


def small_problem(seed: int = 0, act: type[nn.Module] = nn.Tanh):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 6), act(), nn.Linear(6, 2)).to(D)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(9, 3, generator=g, dtype=D)
    y = torch.randn(9, 2, generator=g, dtype=D)
    return net, x, y


def dense_hessian(net, loss_fn, x, y):
    p = autodiff.params_of(net)
    w = autodiff.flatten(p)

    def f(wf):
        return loss_fn(torch.func.functional_call(net, autodiff.unflatten(wf, p), (x,)), y)

    return torch.func.hessian(f)(w), w


def test_params_of_are_detached_copies():
    net, _, _ = small_problem()
    p = autodiff.params_of(net)
    for k, t in net.named_parameters():
        assert not p[k].requires_grad and p[k].data_ptr() != t.data_ptr()
        torch.testing.assert_close(p[k], t.detach())
    p["0.weight"].add_(1.0)
    assert not torch.allclose(p["0.weight"], net[0].weight)


def test_flatten_unflatten_roundtrip():
    net, _, _ = small_problem()
    p = autodiff.params_of(net)
    w = autodiff.flatten(p)
    assert w.shape == (autodiff.num_params(p),) == (3 * 6 + 6 + 6 * 2 + 2,)
    back = autodiff.unflatten(w, p)
    for k in p:
        assert torch.equal(back[k], p[k])


def test_functional_call_matches_module():
    net, x, _ = small_problem()
    torch.testing.assert_close(autodiff.functional_call(net, autodiff.params_of(net), x), net(x))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hvp_matches_dense_hessian(seed):
    net, x, y = small_problem(seed)
    H, w = dense_hessian(net, mse, x, y)
    g = torch.Generator().manual_seed(10 + seed)
    v = torch.randn(w.numel(), generator=g, dtype=D)
    torch.testing.assert_close(autodiff.hvp(net, mse, x, y, v), H @ v, rtol=1e-10, atol=1e-12)
    # dict in, dict out
    out = autodiff.hvp(net, mse, x, y, autodiff.unflatten(v, autodiff.params_of(net)))
    torch.testing.assert_close(autodiff.flatten(out), H @ v, rtol=1e-10, atol=1e-12)


def test_hvp_at_other_params_and_module_untouched():
    net, x, y = small_problem(3)
    before = autodiff.flatten(autodiff.params_of(net))
    p = {k: t + 0.3 for k, t in autodiff.params_of(net).items()}
    w = autodiff.flatten(p)

    def f(wf):
        return mse(torch.func.functional_call(net, autodiff.unflatten(wf, p), (x,)), y)

    H = torch.func.hessian(f)(w)
    v = torch.ones_like(w)
    torch.testing.assert_close(autodiff.hvp(net, mse, x, y, v, params=p), H @ v, rtol=1e-10,
                               atol=1e-12)
    assert torch.equal(autodiff.flatten(autodiff.params_of(net)), before)


def test_gradient_matches_autograd():
    net, x, y = small_problem(4)
    net.zero_grad()
    mse(net(x), y).backward()
    ref = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    torch.testing.assert_close(autodiff.gradient(net, mse, x, y, flat=True), ref)
    assert float(autodiff.loss_value(net, mse, x, y)) == pytest.approx(float(mse(net(x), y).detach()))


def test_jvp_vjp_match_jacobian():
    net, x, _ = small_problem(5)
    p = autodiff.params_of(net)
    w = autodiff.flatten(p)
    J = torch.func.jacrev(
        lambda wf: torch.func.functional_call(net, autodiff.unflatten(wf, p), (x,)))(w)
    J = J.reshape(-1, w.numel())
    g = torch.Generator().manual_seed(0)
    v = torch.randn(w.numel(), generator=g, dtype=D)
    u = torch.randn(9, 2, generator=g, dtype=D)
    torch.testing.assert_close(autodiff.jvp(net, x, v).reshape(-1), J @ v)
    torch.testing.assert_close(autodiff.vjp(net, x, u), J.T @ u.reshape(-1))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_hvp_is_linear_and_symmetric(seed, a, b):
    net, x, y = small_problem(seed % 7)
    n = autodiff.num_params(autodiff.params_of(net))
    g = torch.Generator().manual_seed(seed)
    u, v = torch.randn(n, generator=g, dtype=D), torch.randn(n, generator=g, dtype=D)
    Hu, Hv = autodiff.hvp(net, mse, x, y, u), autodiff.hvp(net, mse, x, y, v)
    torch.testing.assert_close(autodiff.hvp(net, mse, x, y, a * u + b * v), a * Hu + b * Hv,
                               rtol=1e-9, atol=1e-10)
    assert float(u @ Hv) == pytest.approx(float(v @ Hu), rel=1e-9, abs=1e-10)


def test_bad_inputs():
    net, x, y = small_problem()
    n = autodiff.num_params(autodiff.params_of(net))
    v = torch.zeros(n, dtype=D)
    with pytest.raises(TypeError, match="model"):
        autodiff.hvp(lambda t: t, mse, x, y, v)
    with pytest.raises(TypeError, match="loss_fn"):
        autodiff.hvp(net, 3, x, y, v)
    with pytest.raises(ValueError, match="v"):
        autodiff.hvp(net, mse, x, y, torch.zeros(n + 1, dtype=D))
    with pytest.raises(TypeError, match="v"):
        autodiff.hvp(net, mse, x, y, torch.zeros(n, dtype=torch.float32))
    with pytest.raises(ValueError, match="x"):
        autodiff.hvp(net, mse, x * float("nan"), y, v)
    with pytest.raises(ValueError, match="y"):
        autodiff.hvp(net, mse, x, y[:3], v)
    with pytest.raises(ValueError, match="params"):
        autodiff.hvp(net, mse, x, y, v, params={"0.weight": torch.zeros(6, 3, dtype=D)})
    with pytest.raises(ValueError, match="scalar"):
        autodiff.hvp(net, lambda o, t: (o - t) ** 2, x, y, v)
    with pytest.raises(ValueError, match="u"):
        autodiff.vjp(net, x, torch.zeros(3, dtype=D))
    with pytest.raises(ValueError, match="vector"):
        autodiff.unflatten(torch.zeros(3, dtype=D), autodiff.params_of(net))


def test_more_bad_inputs():
    net, x, y = small_problem()
    p = autodiff.params_of(net)
    n = autodiff.num_params(p)
    with pytest.raises(ValueError, match="at least one parameter"):
        autodiff.hvp(nn.Tanh(), mse, x, y, torch.zeros(0, dtype=D))
    with pytest.raises(TypeError, match="params"):
        autodiff.hvp(net, mse, x, y, torch.zeros(n, dtype=D), params=[1.0])
    with pytest.raises(TypeError, match="v"):
        autodiff.hvp(net, mse, x, y, [0.0] * n)
    with pytest.raises(ValueError, match="v must have the keys"):
        autodiff.hvp(net, mse, x, y, {"0.weight": p["0.weight"]})
    with pytest.raises(TypeError, match="params"):
        autodiff.num_params([torch.zeros(3)])
    with pytest.raises(TypeError, match="params"):
        autodiff.flatten({})
    with pytest.raises(TypeError, match="like"):
        autodiff.unflatten(torch.zeros(3, dtype=D), {})
