"""nnopt.dense_hvp: the layerwise R-operator against autograd and the dense Hessian (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnopt import autodiff, curvature
from nnopt.losses import cross_entropy as closed_form_ce, half_mse
from nnopt.dense_hvp import dense_layers

D = torch.float64


def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - target) ** 2).sum(dim=-1).mean()


def cross_entropy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, target)


def linear_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out * target).sum()  # ∇²_f of the loss is zero: only the network's curvature


def build(kind: str) -> tuple[nn.Module, object]:
    torch.manual_seed(3)
    nets = {
        "tanh": (nn.Sequential(nn.Linear(3, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(),
                               nn.Linear(6, 2)), mse),
        "sigmoid-relu-ce": (nn.Sequential(nn.Linear(3, 6), nn.Sigmoid(),
                                          nn.Linear(6, 5, bias=False), nn.ReLU(),
                                          nn.Linear(5, 4), nn.Identity()), cross_entropy),
        "linear-then-sigmoid": (nn.Sequential(nn.Linear(3, 5, bias=False), nn.Linear(5, 2),
                                              nn.Sigmoid()), mse),
        "linear-loss": (nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)), linear_loss),
    }
    # the same networks with a loss whose Hessian in the outputs comes in closed form
    # (output_hvp) instead of from autograd
    closed_form = {"tanh-half-mse": ("tanh", half_mse),
                   "sigmoid-relu-closed-form-ce": ("sigmoid-relu-ce", closed_form_ce)}
    if kind in closed_form:
        base, loss = closed_form[kind]
        return nets[base][0].to(D), loss
    net, loss = nets[kind]
    return net.to(D), loss


def data(kind: str, n: int = 15) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 3, generator=g, dtype=D)
    if kind in ("sigmoid-relu-ce", "sigmoid-relu-closed-form-ce"):
        return x, torch.randint(0, 4, (n,), generator=g)
    return x, torch.randn(n, 2, generator=g, dtype=D)


KINDS = ["tanh", "sigmoid-relu-ce", "linear-then-sigmoid", "linear-loss", "tanh-half-mse",
         "sigmoid-relu-closed-form-ce"]


@pytest.mark.parametrize("kind", KINDS)
def test_layerwise_matches_the_dense_hessian(kind):
    net, loss = build(kind)
    x, y = data(kind)
    op = curvature.HessianOperator(net, loss, x, y)
    assert op.method == "layerwise"
    p = autodiff.params_of(net)
    w0 = autodiff.flatten(p)

    def loss_of(w):
        return loss(torch.func.functional_call(net, autodiff.unflatten(w, p), (x,)), y)

    H = torch.func.hessian(loss_of)(w0)
    G = torch.func.grad(loss_of)(w0)
    torch.testing.assert_close(op.grad, G, rtol=1e-12, atol=1e-14)
    assert op.loss == pytest.approx(float(loss_of(w0)), rel=1e-14)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(op.size, generator=g, dtype=D)
        torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_layerwise_matches_double_backward(kind):
    net, loss = build(kind)
    x, y = data(kind, n=40)
    lw = curvature.HessianOperator(net, loss, x, y, method="layerwise")
    db = curvature.HessianOperator(net, loss, x, y, method="double-backward")
    assert lw.loss == db.loss
    torch.testing.assert_close(lw.grad, db.grad, rtol=1e-12, atol=1e-15)
    g = torch.Generator().manual_seed(2)
    vs = [torch.randn(lw.size, generator=g, dtype=D) for _ in range(3)]
    outs = [lw.matvec(v) for v in vs]  # products returned earlier are not overwritten later
    for v, out in zip(vs, outs):
        torch.testing.assert_close(out, db.matvec(v), rtol=1e-10, atol=1e-13)
    assert lw.n_matvecs == 3


def test_layerwise_keeps_the_parameter_order_of_params():
    net, loss = build("tanh")
    x, y = data("tanh")
    p = autodiff.params_of(net)
    reordered = dict(reversed(list(p.items())))
    lw = curvature.HessianOperator(net, loss, x, y, reordered)
    db = curvature.HessianOperator(net, loss, x, y, reordered, method="double-backward")
    v = torch.randn(lw.size, generator=torch.Generator().manual_seed(3), dtype=D)
    torch.testing.assert_close(lw.grad, db.grad, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(lw.matvec(v), db.matvec(v), rtol=1e-10, atol=1e-13)


def test_float32_agrees_with_float64():
    net, loss = build("tanh")
    x, y = data("tanh", n=200)
    v = torch.randn(autodiff.num_params(autodiff.params_of(net)),
                    generator=torch.Generator().manual_seed(4), dtype=D)
    ref = curvature.HessianOperator(net, loss, x, y).matvec(v)
    net32 = net.float()
    got = curvature.HessianOperator(net32, loss, x.float(), y.float()).matvec(v.float())
    assert got.dtype == torch.float32
    assert float((got.double() - ref).norm() / ref.norm()) < 1e-5


def test_auto_falls_back_when_the_model_does_not_qualify():
    net, loss = build("tanh")
    x, y = data("tanh")

    class Wrapped(nn.Sequential):
        pass

    other = Wrapped(*net)
    assert curvature.HessianOperator(other, loss, x, y).method == "double-backward"
    x3 = x.reshape(3, 5, 3)
    y3 = y.reshape(3, 5, 2)
    assert curvature.HessianOperator(net, loss, x3, y3).method == "double-backward"
    r_auto = curvature.top_hessian_eigenvalue(net, loss, x, y, seed=0)
    r_db = curvature.top_hessian_eigenvalue(net, loss, x, y, seed=0, method="double-backward")
    assert r_auto.converged and r_db.converged
    assert r_auto.value == pytest.approx(r_db.value, rel=1e-9)


def test_dense_layers_accepts_only_plain_dense_networks():
    L = nn.Linear
    assert dense_layers(nn.Sequential(L(2, 3), nn.Tanh(), L(3, 1))) is not None
    assert [x.bias for x in dense_layers(nn.Sequential(L(2, 3, bias=False), L(3, 1)))] == \
        [None, "1.bias"]
    refused = [
        nn.Sequential(),
        nn.Sequential(nn.Tanh(), L(2, 3)),  # starts with an activation
        nn.Sequential(L(2, 3), nn.Tanh(), nn.Tanh(), L(3, 1)),  # two activations in a row
        nn.Sequential(L(2, 3), nn.ReLU(inplace=True), L(3, 1)),
        nn.Sequential(L(2, 3), nn.GELU(), L(3, 1)),  # no closed-form σ'' here
        nn.Sequential(L(2, 3), nn.Sequential(nn.Tanh()), L(3, 1)),
        L(2, 3),
    ]
    for model in refused:
        assert dense_layers(model) is None, model


def test_layerwise_bad_inputs():
    net, loss = build("tanh")
    x, y = data("tanh")
    with pytest.raises(ValueError, match="layerwise"):
        curvature.HessianOperator(nn.Sequential(nn.Linear(3, 2), nn.GELU()).to(D), loss, x, y,
                                  method="layerwise")
    with pytest.raises(ValueError, match="x"):
        curvature.HessianOperator(net, loss, x.reshape(3, 5, 3), y.reshape(3, 5, 2),
                                  method="layerwise")
    with pytest.raises(TypeError, match="x of the parameters' dtype"):
        curvature.HessianOperator(net, loss, x.float(), y, method="layerwise")
    with pytest.raises(ValueError, match="x must have 3 columns"):
        curvature.HessianOperator(net, loss, x[:, :2], y)
    with pytest.raises(ValueError, match="scalar"):
        curvature.HessianOperator(net, lambda o, t: o - t, x, y)
    op = curvature.HessianOperator(net, loss, x, y)
    with pytest.raises(ValueError, match="v"):
        op.matvec(torch.ones(op.size + 1, dtype=D))
    with pytest.raises(ValueError, match="v"):
        op.matvec(torch.full((op.size,), float("nan"), dtype=D))
    with pytest.raises(FloatingPointError):
        big = {k: t * 1e300 for k, t in autodiff.params_of(net).items()}
        curvature.HessianOperator(net, loss, x * 1e300, y, big)


def test_a_declared_output_hessian_is_what_the_product_uses():
    net, _ = build("tanh")
    x, y = data("tanh")

    def claims_twice(out, target):
        return half_mse(out, target)

    # a loss that misdeclares its output Hessian as 2I/n: the product must change accordingly
    claims_twice.output_hvp = lambda out, target, u: 2 * half_mse.output_hvp(out, target, u)
    v = torch.randn(autodiff.num_params(autodiff.params_of(net)),
                    generator=torch.Generator().manual_seed(5), dtype=D)
    honest = curvature.HessianOperator(net, half_mse, x, y)
    lying = curvature.HessianOperator(net, claims_twice, x, y)
    db = curvature.HessianOperator(net, half_mse, x, y, method="double-backward")
    torch.testing.assert_close(honest.matvec(v), db.matvec(v), rtol=1e-10, atol=1e-13)
    assert float((lying.matvec(v) - db.matvec(v)).norm()) > 1e-3 * float(db.matvec(v).norm())

    claims_twice.output_hvp = lambda out, target, u: u[:, :1]
    with pytest.raises(ValueError, match="output_hvp must return a tensor of the outputs' shape"):
        curvature.HessianOperator(net, claims_twice, x, y).matvec(v)
