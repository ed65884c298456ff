"""Exact Hessian-vector products of a dense network, layer by layer (Pearlmutter's R-operator).

For a network ``nn.Sequential`` of ``nn.Linear`` layers, each followed by at most one
elementwise activation σ (tanh, sigmoid, ReLU or the identity), and any twice-differentiable
``loss_fn(outputs, targets)``, write z_l = a_{l−1} W_lᵀ + b_l, a_l = σ_l(z_l), a_0 = x and
L = loss_fn(a_L, y). Backpropagation gives the signals g_l = ∂L/∂a_l and δ_l = ∂L/∂z_l = g_l ⊙ σ_l'(z_l),
and ∇_{W_l} L = δ_lᵀ a_{l−1}, ∇_{b_l} L = Σ_examples δ_l, g_{l−1} = δ_l W_l.

Differentiating each of these along a direction v = (V_l, v_l) of the parameters (the R-operator
of Pearlmutter 1994; the dot marks R{·}) gives ∇²L v exactly:

* tangent forward:  ż_l = ȧ_{l−1} W_lᵀ + a_{l−1} V_lᵀ + v_l,  ȧ_l = σ_l'(z_l) ⊙ ż_l,  ȧ_0 = 0;
* at the output:    ġ_L = ∇²_f loss · ȧ_L (one small product with the loss's own Hessian: the
  loss's ``output_hvp`` if it has one, see :mod:`nnopt.losses`, else a backward pass through
  the graph of ∂L/∂a_L);
* tangent backward: δ̇_l = ġ_l ⊙ σ_l'(z_l) + g_l ⊙ σ_l''(z_l) ⊙ ż_l,
  (∇²L v)_{W_l} = δ̇_lᵀ a_{l−1} + δ_lᵀ ȧ_{l−1},  (∇²L v)_{b_l} = Σ δ̇_l,
  ġ_{l−1} = δ̇_l W_l + δ_l V_l.

Everything that does not depend on v (a_l, σ', g_l ⊙ σ'', δ_l) is computed once per point, so
a product evaluates no activation function and builds no autograd graph: it is the bilinear
products counted by :func:`nnopt.curvature.hvp_to_gradient_macs` and a few elementwise
multiply-adds. :class:`nnopt.curvature.HessianOperator` uses this path (``method="layerwise"``,
chosen by ``"auto"``) whenever :func:`dense_layers` accepts the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .autodiff import _scalar_loss

__all__ = ["DenseLayer", "dense_layers", "DenseNetworkHessian"]

# σ(z) → (a, σ'(z), σ''(z)); None stands for the constant 1 (σ') or 0 (σ'')
_Derivs = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def _tanh(z: torch.Tensor) -> _Derivs:
    a = torch.tanh(z)
    d1 = 1 - a * a
    return a, d1, -2 * a * d1


def _sigmoid(z: torch.Tensor) -> _Derivs:
    a = torch.sigmoid(z)
    d1 = a * (1 - a)
    return a, d1, d1 * (1 - 2 * a)


def _relu(z: torch.Tensor) -> _Derivs:
    return torch.relu(z), (z > 0).to(z.dtype), None  # σ'' = 0 wherever it exists


def _identity(z: torch.Tensor) -> _Derivs:
    return z, None, None


_ACTIVATIONS: dict[type, Callable[[torch.Tensor], _Derivs]] = {
    nn.Tanh: _tanh, nn.Sigmoid: _sigmoid, nn.ReLU: _relu, nn.Identity: _identity,
}


@dataclass(frozen=True)
class DenseLayer:
    """One stage a = σ(a_prev Wᵀ + b): parameter names (``bias`` None without a bias)."""

    weight: str
    bias: str | None
    activation: Callable[[torch.Tensor], _Derivs]


def dense_layers(model: nn.Module) -> list[DenseLayer] | None:
    """The stages of ``model`` if it is a dense network this module handles, else None.

    Accepted: an ``nn.Sequential`` (not a subclass, whose ``forward`` may differ) of
    ``nn.Linear`` modules, each followed by at most one of ``nn.Tanh``, ``nn.Sigmoid``,
    ``nn.ReLU`` (not in-place) or ``nn.Identity``, starting with a Linear layer.
    """
    if type(model) is not nn.Sequential or len(model) == 0:
        return None
    layers: list[DenseLayer] = []
    pending: tuple[str, str | None] | None = None
    for name, m in model.named_children():
        if type(m) is nn.Linear:
            if pending is not None:
                layers.append(DenseLayer(*pending, _identity))
            pending = (f"{name}.weight", f"{name}.bias" if m.bias is not None else None)
        elif type(m) in _ACTIVATIONS and pending is not None:
            if type(m) is nn.ReLU and m.inplace:
                return None
            layers.append(DenseLayer(*pending, _ACTIVATIONS[type(m)]))
            pending = None
        else:
            return None
    if pending is not None:
        layers.append(DenseLayer(*pending, _identity))
    return layers


class DenseNetworkHessian:
    """∇²L(w) v for a dense network at one point w, with everything v-independent cached.

    Construction runs the forward pass and backpropagation once (the cost of one gradient)
    and keeps ``loss`` (a 0-d tensor) and ``grad`` (flat, in the key order of ``params``).
    ``hvp(v)`` applies the tangent passes of the module docstring to a flat v, writing its
    intermediates into buffers kept between products (fresh ones would be allocated, and on
    Linux often page-faulted in, on every product). Activations and signals are n × d_l, one
    row per example. The caller validates the inputs (see
    :class:`nnopt.curvature.HessianOperator`).
    """

    def __init__(self, layers: list[DenseLayer], loss_fn: Callable[..., torch.Tensor],
                 x: torch.Tensor, y: torch.Tensor, params: Mapping[str, torch.Tensor]) -> None:
        self.layers = layers
        self.names = list(params)
        self.shapes = [params[k].shape for k in self.names]
        self.sizes = [int(params[k].numel()) for k in self.names]
        self.W = [params[lay.weight] for lay in layers]
        with torch.no_grad():
            self.inputs: list[torch.Tensor] = []  # a_{l−1}
            self.d1: list[torch.Tensor | None] = []  # σ'(z_l)
            d2: list[torch.Tensor | None] = []
            a = x
            for lay, W in zip(layers, self.W):
                self.inputs.append(a)
                b = params[lay.bias] if lay.bias is not None else None
                z = torch.addmm(b, a, W.T) if b is not None else a @ W.T
                a, s1, s2 = lay.activation(z)
                self.d1.append(s1)
                d2.append(s2)
        # the loss's Hessian in the outputs: in closed form if the loss declares it
        # (:mod:`nnopt.losses`), else by differentiating ∂L/∂a_L again through its graph
        self._output_hvp = getattr(loss_fn, "output_hvp", None)
        self._y = y
        with torch.enable_grad():
            self._out = a.detach().requires_grad_(True)
            loss = _scalar_loss(loss_fn(self._out, y))
            (g_out,) = torch.autograd.grad(loss, self._out,
                                           create_graph=self._output_hvp is None)
        self.loss = loss.detach()
        self._g_out = g_out  # ∂L/∂a_L, with its graph unless the loss declares output_hvp
        self._curved_loss = g_out.requires_grad
        with torch.no_grad():
            grads: dict[str, torch.Tensor] = {}
            self.delta: list[torch.Tensor] = []  # δ_l = ∂L/∂z_l
            self.c: list[torch.Tensor | None] = []  # g_l ⊙ σ''(z_l)
            g = g_out.detach()
            for i in range(len(layers) - 1, -1, -1):
                lay, s1, s2 = layers[i], self.d1[i], d2[i]
                delta = g if s1 is None else g * s1
                self.delta.append(delta)
                self.c.append(None if s2 is None else g * s2)
                grads[lay.weight] = delta.T @ self.inputs[i]
                if lay.bias is not None:
                    grads[lay.bias] = delta.sum(0)
                if i > 0:
                    g = delta @ self.W[i]
            self.delta.reverse()
            self.c.reverse()
            self.grad = torch.cat([grads[k].reshape(-1) for k in self.names])
        self._work: list[tuple[torch.Tensor, ...]] | None = None

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """∇²L(w) v, flat, by one tangent forward and one tangent backward pass."""
        out = torch.empty_like(v)
        V = dict(zip(self.names, (p.view(s) for p, s in
                                  zip(torch.split(v, self.sizes), self.shapes))))
        H = dict(zip(self.names, (p.view(s) for p, s in
                                  zip(torch.split(out, self.sizes), self.shapes))))
        if self._work is None:  # ż_l, ȧ_l, δ̇_l and ġ_{l−1}, reused by every product
            self._work = [tuple(torch.empty_like(d) for _ in range(4)) for d in self.delta]
        dz, da, dd, gd = zip(*self._work)
        with torch.no_grad():
            prev: torch.Tensor | None = None  # ȧ_{l−1}; ȧ_0 = 0
            for i, lay in enumerate(self.layers):
                Vw = V[lay.weight]
                if lay.bias is not None:
                    torch.addmm(V[lay.bias], self.inputs[i], Vw.T, out=dz[i])
                else:
                    torch.mm(self.inputs[i], Vw.T, out=dz[i])
                if prev is not None:
                    dz[i].addmm_(prev, self.W[i].T)
                s1 = self.d1[i]
                prev = dz[i] if s1 is None else torch.mul(s1, dz[i], out=da[i])
            assert prev is not None
        if self._output_hvp is not None:
            gdot = self._output_hvp(self._out.detach(), self._y, prev)
            if not isinstance(gdot, torch.Tensor) or gdot.shape != prev.shape:
                got = getattr(gdot, "shape", type(gdot).__name__)
                raise ValueError(f"loss_fn.output_hvp must return a tensor of the outputs' "
                                 f"shape {tuple(prev.shape)}, got {got}")
        elif self._curved_loss:
            (gdot,) = torch.autograd.grad(self._g_out, self._out, grad_outputs=prev,
                                          retain_graph=True)
        else:  # the loss is linear in the outputs
            gdot = torch.zeros_like(prev)
        with torch.no_grad():
            for i in range(len(self.layers) - 1, -1, -1):
                lay, s1, c = self.layers[i], self.d1[i], self.c[i]
                ddelta = gdot if s1 is None else torch.mul(gdot, s1, out=dd[i])
                if c is not None:
                    ddelta.addcmul_(c, dz[i])
                Hw = H[lay.weight]
                torch.mm(ddelta.T, self.inputs[i], out=Hw)
                if i > 0:
                    a_prev = dz[i - 1] if self.d1[i - 1] is None else da[i - 1]
                    Hw.addmm_(self.delta[i].T, a_prev)
                if lay.bias is not None:
                    torch.sum(ddelta, 0, out=H[lay.bias])
                if i > 0:
                    gdot = torch.mm(ddelta, self.W[i], out=gd[i - 1])
                    gdot.addmm_(self.delta[i], V[lay.weight])
        return out
