"""Signal propagation in deep random networks at initialisation (chapter 11).

A fully connected network with weights W_ij ~ N(0, σ_w²/N) and biases b_i ~ N(0, σ_b²),
pre-activations z = W y + b and activations y' = φ(z) (Balboni §1.1, after Poole et al. 2016
and Schoenholz et al. 2017). In the wide limit the pre-activations of one layer are Gaussian and
their second moments obey deterministic recursions:

* :func:`q_map` — the length map q' = σ_w² E_z[φ(√q z)²] + σ_b², z ~ N(0, 1), and
  :func:`q_fixed_point`, its fixed point q*.
* :func:`pair_moment` — E[f(u₁) f(u₂)] for two Gaussians of variance q and correlation c, and
  :func:`arccos_kernel`, its closed form for f = ReLU (the arc-cosine kernel of degree 1).
* :func:`c_map` — the correlation map of two inputs of equal length q:
  c' = (σ_w² E[φ(u₁) φ(u₂)] + σ_b²) / q_map(q), with u₁ = √q z₁ and
  u₂ = √q (c z₁ + √(1 − c²) z₂).
* :func:`chi1` — χ₁ = σ_w² E[φ'(√q* z)²], the slope of the c-map at c = 1; χ₁ < 1 is the
  ordered phase, χ₁ > 1 the chaotic one, and :func:`critical_sigma_w2` solves χ₁ = 1.
* :func:`correlation_fixed_point` and :func:`correlation_depth_scale` — the stable fixed point c*
  of the c-map and the depth scale ξ_c = −1/log χ_c, χ_c = σ_w² E[φ'(u₁) φ'(u₂)] at c*
  (Schoenholz et al. 2017).
* :func:`random_deep_net`, :func:`input_output_jacobian` and
  :func:`input_output_jacobian_singular_values` — the input–output Jacobian
  J = D_L W_L ⋯ D_1 W_1 of a deep net and its singular values (dynamical isometry,
  Balboni §1.2 after Pennington et al. 2017).

Expectations over Gaussians use Gauss–Hermite quadrature for the weight exp(−x²/2)
(``numpy.polynomial.hermite_e.hermegauss``) in float64. Activations are named by strings:
``"tanh"``, ``"relu"`` and ``"linear"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from .validation import (check_callable, check_choice, check_int, check_positive,
                         check_same_device, check_same_device_if_tensors, check_tensor)

__all__ = [
    "ACTIVATIONS",
    "MAX_NODES",
    "gauss_hermite",
    "gaussian_expectation",
    "q_map",
    "q_fixed_point",
    "pair_moment",
    "arccos_kernel",
    "c_map",
    "chi1",
    "critical_sigma_w2",
    "correlation_fixed_point",
    "correlation_depth_scale",
    "random_deep_net",
    "input_output_jacobian",
    "input_output_jacobian_singular_values",
]

ACTIVATIONS = ("tanh", "relu", "linear")
"""The activations the mean-field maps know, with their derivatives."""

MAX_NODES = 300
"""The largest Gauss–Hermite rule offered (``hermegauss`` overflows near 400 nodes)."""

_D = torch.float64
Number = float | torch.Tensor


def _phi(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return {"tanh": torch.tanh, "relu": torch.relu, "linear": lambda x: x}[name]


def _dphi(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return {
        "tanh": lambda x: 1.0 - torch.tanh(x) ** 2,
        "relu": lambda x: (x > 0).to(x.dtype),
        "linear": torch.ones_like,
    }[name]


def _module(name: str) -> nn.Module:
    return {"tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity}[name]()


@lru_cache(maxsize=16)
def _nodes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return torch.tensor(x, dtype=_D), torch.tensor(w / math.sqrt(2 * math.pi), dtype=_D)


def _check_nodes(n_nodes: object) -> int:
    n = check_int(n_nodes, "n_nodes", minimum=2)
    if n > MAX_NODES:
        raise ValueError(f"n_nodes must be <= {MAX_NODES} (numpy's weights overflow beyond), got {n}")
    return n


def gauss_hermite(n_nodes: int = 101) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes x_k and weights w_k with Σ_k w_k f(x_k) ≈ E[f(z)], z ~ N(0, 1).

    The probabilists' Gauss–Hermite rule: exact for polynomials of degree up to 2 n_nodes − 1.
    """
    n = _check_nodes(n_nodes)
    x, w = _nodes(n)
    return x.clone(), w.clone()


def gaussian_expectation(f: Callable[[torch.Tensor], torch.Tensor], n_nodes: int = 101) -> torch.Tensor:
    """E[f(z)] for z ~ N(0, 1) by Gauss–Hermite quadrature; ``f`` acts elementwise on a 1-D tensor."""
    check_callable(f, "f")
    x, w = gauss_hermite(n_nodes)
    return (w * f(x)).sum()


def _bisect(root_above: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor,
            tol: Callable[[torch.Tensor], torch.Tensor | float]) -> torch.Tensor:
    """Elementwise bisection: halve [lo, hi] until hi − lo ≤ tol(hi), keeping the half that holds the root.

    ``root_above(mid)`` is True where the root lies above ``mid``; lo and hi must bracket it.
    """
    while bool(((hi - lo) > tol(hi)).any()):
        mid = 0.5 * (lo + hi)
        up = root_above(mid)
        lo = torch.where(up, mid, lo)
        hi = torch.where(up, hi, mid)
    return 0.5 * (lo + hi)


def _as_tensor(value: Number, name: str, *, strict: bool) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        check_tensor(value, name)
        if bool((value < 0).any()) or (strict and bool((value == 0).any())):
            raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'} everywhere")
        return value.to(_D)
    return torch.tensor(check_positive(value, name, strict=strict), dtype=_D)


def _out(result: torch.Tensor, *inputs: Number) -> Number:
    if any(isinstance(v, torch.Tensor) for v in inputs):
        return result
    return float(result)


def _second_moment(q: torch.Tensor, activation: str, n_nodes: int) -> torch.Tensor:
    x, w = _nodes(n_nodes)
    return (w * _phi(activation)(torch.sqrt(q)[..., None] * x) ** 2).sum(-1)


def _slope_moment(q: torch.Tensor, activation: str, n_nodes: int) -> torch.Tensor:
    if activation != "tanh":  # E[1(z > 0)] = 1/2 and 1, exactly (a rule would miss the jump)
        return torch.full_like(q, 0.5 if activation == "relu" else 1.0)
    x, w = _nodes(n_nodes)
    return (w * _dphi(activation)(torch.sqrt(q)[..., None] * x) ** 2).sum(-1)


def q_map(q: Number, sigma_w2: Number, sigma_b2: Number, activation: str = "tanh", *,
          n_nodes: int = 101) -> Number:
    """The length map q' = σ_w² E_z[φ(√q z)²] + σ_b², z ~ N(0, 1) (Balboni §1.1, the recursion for q_aa).

    Arguments broadcast (floats or float tensors); the result is a float when all are floats.
    """
    check_same_device_if_tensors(q=q, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    qt = _as_tensor(q, "q", strict=False)
    w2 = _as_tensor(sigma_w2, "sigma_w2", strict=False)
    b2 = _as_tensor(sigma_b2, "sigma_b2", strict=False)
    check_choice(activation, "activation", ACTIVATIONS)
    n = _check_nodes(n_nodes)
    return _out(w2 * _second_moment(qt, activation, n) + b2, q, sigma_w2, sigma_b2)


def q_fixed_point(sigma_w2: Number, sigma_b2: Number, activation: str = "tanh", *,
                  n_nodes: int = 101, tol: float = 1e-13) -> Number:
    """The fixed point q* = q_map(q*) that the lengths converge to (Balboni §1.1).

    * ``"tanh"``: φ is bounded, so q_map(q) − q is positive at 0 (it equals σ_b²) and negative at
      q = σ_w² + σ_b²; bisection returns the largest root, which is q* = 0 when σ_b² = 0 and
      σ_w² ≤ 1, the unique positive root otherwise.
    * ``"relu"`` and ``"linear"``: φ(√q z)² = q φ(z)², so q_map is affine,
      q* = σ_b² / (1 − σ_w² m₂) with m₂ = E[φ(z)²] (1/2 for ReLU, 1 for linear), and
      q* = inf when σ_w² m₂ ≥ 1 (the lengths grow without bound or, with σ_b² = 0 and
      σ_w² m₂ = 1, every q is fixed).
    """
    check_same_device_if_tensors(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    w2 = _as_tensor(sigma_w2, "sigma_w2", strict=False)
    b2 = _as_tensor(sigma_b2, "sigma_b2", strict=False)
    check_choice(activation, "activation", ACTIVATIONS)
    n = _check_nodes(n_nodes)
    tol = check_positive(tol, "tol")
    w2, b2 = torch.broadcast_tensors(w2, b2)
    if activation in ("relu", "linear"):
        m2 = 0.5 if activation == "relu" else 1.0
        slope = w2 * m2
        safe = torch.where(slope < 1, 1 - slope, torch.ones_like(slope))
        q = torch.where(slope < 1, b2 / safe, torch.full_like(slope, math.inf))
        return _out(q, sigma_w2, sigma_b2)
    q = _bisect(lambda mid: w2 * _second_moment(mid, activation, n) + b2 > mid,
                torch.zeros_like(w2), w2 + b2 + 1.0, lambda hi: tol * (1 + hi))
    return _out(q, sigma_w2, sigma_b2)


def _pair_moment(c: torch.Tensor, q: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor],
                 n_nodes: int) -> torch.Tensor:
    x, w = _nodes(n_nodes)
    z1, z2 = x[:, None], x[None, :]
    ww = w[:, None] * w[None, :]
    s = torch.sqrt(q)[..., None, None]
    cc = c[..., None, None]
    u1 = s * z1
    u2 = s * (cc * z1 + torch.sqrt(torch.clamp(1 - cc * cc, min=0.0)) * z2)
    return (ww * f(u1) * f(u2)).sum((-2, -1))


def _check_c(c: Number) -> torch.Tensor:
    if isinstance(c, torch.Tensor):
        check_tensor(c, "c")
        ct = c.to(_D)
    else:
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            raise TypeError(f"c must be a real number or a tensor, got {type(c).__name__}")
        ct = torch.tensor(float(c), dtype=_D)
    if not bool(((ct >= -1) & (ct <= 1)).all()):
        raise ValueError("c must lie in [-1, 1]")
    return ct


def pair_moment(f: Callable[[torch.Tensor], torch.Tensor], c: Number, q: Number = 1.0, *,
                n_nodes: int = 61) -> Number:
    """E[f(u₁) f(u₂)] with u₁ = √q z₁ and u₂ = √q (c z₁ + √(1 − c²) z₂), z₁, z₂ independent N(0, 1).

    u₁ and u₂ are Gaussians of variance q and correlation c, the pre-activations of two inputs
    of length q and correlation c (Balboni §1.1). Computed on the n_nodes × n_nodes tensor-product
    Gauss–Hermite rule: exact for polynomial f of degree < n_nodes, and converging only like
    1/n_nodes for an f with a jump (the ReLU's slope); :func:`arccos_kernel` is the closed form
    for the ReLU itself. ``c`` and ``q`` broadcast; a float comes back when both are floats.
    """
    check_callable(f, "f")
    check_same_device_if_tensors(c=c, q=q)
    ct = _check_c(c)
    qt = _as_tensor(q, "q", strict=False)
    return _out(_pair_moment(ct, qt, f, _check_nodes(n_nodes)), c, q)


def arccos_kernel(c: Number, q: Number = 1.0) -> Number:
    """E[relu(u₁) relu(u₂)] = q (√(1 − c²) + (π − arccos c) c) / (2π), u₁, u₂ as in :func:`pair_moment`.

    The arc-cosine kernel of degree 1 (Cho and Saul 2009); chapter 11 derives it from Price's
    theorem and Sheppard's orthant formula. Equals q/2 at c = 1 and q/(2π) at c = 0. ``c``
    and ``q`` broadcast; a float comes back when both are floats.
    """
    check_same_device_if_tensors(c=c, q=q)
    ct = _check_c(c)
    qt = _as_tensor(q, "q", strict=False)
    out = qt / (2 * math.pi) * (torch.sqrt(torch.clamp(1 - ct * ct, min=0.0))
                                + (math.pi - torch.arccos(ct)) * ct)
    return _out(out, c, q)


def c_map(c: Number, sigma_w2: Number, sigma_b2: Number, activation: str = "tanh", *,
          q: Number | None = None, n_nodes: int = 61) -> Number:
    """The correlation map c' = (σ_w² E[φ(u₁) φ(u₂)] + σ_b²) / q_map(q) (Balboni §1.1, eq. for q_ab).

    Two inputs of equal length q (default q = q*, the fixed point) and correlation c:
    u₁ = √q z₁ and u₂ = √q (c z₁ + √(1 − c²) z₂) with z₁, z₂ independent N(0, 1). By
    Cauchy–Schwarz c' lies in [−1, 1], and c' = 1 at c = 1. For tanh the double integral uses
    an n_nodes × n_nodes Gauss–Hermite rule; for ReLU, whose kink makes that rule converge only
    like 1/n_nodes, the closed form :func:`arccos_kernel`; for the linear map q c.
    """
    check_same_device_if_tensors(c=c, sigma_w2=sigma_w2, sigma_b2=sigma_b2, q=q)
    ct = _check_c(c)
    w2 = _as_tensor(sigma_w2, "sigma_w2", strict=False)
    b2 = _as_tensor(sigma_b2, "sigma_b2", strict=False)
    check_choice(activation, "activation", ACTIVATIONS)
    n = _check_nodes(n_nodes)
    qt = (torch.as_tensor(q_fixed_point(w2, b2, activation), dtype=_D) if q is None
          else _as_tensor(q, "q", strict=True))
    if not bool(torch.isfinite(qt).all()):
        raise ValueError("the fixed point q* is infinite here; pass a finite q")
    if activation == "relu":
        pair = torch.as_tensor(arccos_kernel(ct, qt))
        den = w2 * qt / 2 + b2
    elif activation == "linear":
        pair = qt * ct
        den = w2 * qt + b2
    else:
        pair = _pair_moment(ct, qt, _phi(activation), n)
        den = w2 * _second_moment(qt, activation, 101) + b2
    num = w2 * pair + b2
    out = torch.where(ct == 1, torch.ones_like(num), torch.clamp(num / den, -1.0, 1.0))
    return _out(out, c, sigma_w2, sigma_b2, q if q is not None else 0.0)


def chi1(sigma_w2: Number, sigma_b2: Number, activation: str = "tanh", *,
         q: Number | None = None, n_nodes: int = 101) -> Number:
    """χ₁ = σ_w² E_z[φ'(√q* z)²], z ~ N(0, 1) (Balboni §1.1; the measure is Gaussian, see the erratum of chapter 11).

    ``q`` defaults to the fixed point q*. For ReLU and linear φ the value does not depend on q
    (σ_w²/2 and σ_w²), even where q* is infinite.
    """
    check_same_device_if_tensors(sigma_w2=sigma_w2, sigma_b2=sigma_b2, q=q)
    w2 = _as_tensor(sigma_w2, "sigma_w2", strict=False)
    b2 = _as_tensor(sigma_b2, "sigma_b2", strict=False)
    check_choice(activation, "activation", ACTIVATIONS)
    n = _check_nodes(n_nodes)
    qt = (torch.as_tensor(q_fixed_point(w2, b2, activation), dtype=_D) if q is None
          else _as_tensor(q, "q", strict=False))
    return _out(w2 * _slope_moment(qt, activation, n), sigma_w2, sigma_b2)


def critical_sigma_w2(sigma_b2: Number, activation: str = "tanh", *, tol: float = 1e-10) -> Number:
    """The weight variance σ_w² on the critical line χ₁(σ_w², σ_b²) = 1 (Balboni §1.1).

    Found by bisection in σ_w² (χ₁ is 0 at σ_w² = 0 and increases through 1). For ReLU the answer
    is σ_w² = 2 for every σ_b², for the linear map σ_w² = 1.
    """
    b2 = _as_tensor(sigma_b2, "sigma_b2", strict=False)
    check_choice(activation, "activation", ACTIVATIONS)
    tol = check_positive(tol, "tol")

    def root_above(w2: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(chi1(w2, b2, activation)) < 1

    hi = torch.full_like(b2, 1.0)
    while bool((low := root_above(hi)).any()):  # double hi until χ₁(hi) ≥ 1 everywhere
        hi = torch.where(low, 2 * hi, hi)
    return _out(_bisect(root_above, torch.zeros_like(b2), hi, lambda _: tol), sigma_b2)


def correlation_fixed_point(sigma_w2: float, sigma_b2: float, activation: str = "tanh", *,
                            n_nodes: int = 61, tol: float = 1e-12) -> float:
    """The stable fixed point c* of the c-map at q = q* (Schoenholz et al. 2017).

    c* = 1 in the ordered phase (χ₁ ≤ 1); in the chaotic phase (χ₁ > 1) c = 1 is unstable and
    c* < 1 is the root of c_map(c) = c in [−1, 1), found by bisection (c_map(c) − c is positive
    below c* and negative between c* and 1).
    """
    w2 = check_positive(sigma_w2, "sigma_w2")
    b2 = check_positive(sigma_b2, "sigma_b2", strict=False)
    check_choice(activation, "activation", ACTIVATIONS)
    tol = check_positive(tol, "tol")
    if float(chi1(w2, b2, activation)) <= 1.0:
        return 1.0
    q = float(q_fixed_point(w2, b2, activation))
    c = _bisect(lambda mid: torch.as_tensor(c_map(mid, w2, b2, activation, q=q, n_nodes=n_nodes)) > mid,
                torch.tensor(-1.0, dtype=_D), torch.tensor(1.0 - 1e-9, dtype=_D), lambda _: tol)
    return float(c)


def correlation_depth_scale(sigma_w2: float, sigma_b2: float, activation: str = "tanh", *,
                            n_nodes: int = 61) -> float:
    """ξ_c = −1/log χ_c with χ_c = σ_w² E[φ'(u₁) φ'(u₂)] at the stable fixed point c* (Schoenholz et al. 2017).

    χ_c is the slope of the c-map at c* (Price's theorem), so c^l − c* shrinks like
    exp(−l/ξ_c). In the ordered phase c* = 1 and χ_c = χ₁; ξ_c diverges on the critical line.
    Returns inf when χ_c = 1.
    """
    w2 = check_positive(sigma_w2, "sigma_w2")
    b2 = check_positive(sigma_b2, "sigma_b2", strict=False)
    check_choice(activation, "activation", ACTIVATIONS)
    c_star = correlation_fixed_point(w2, b2, activation, n_nodes=n_nodes)
    if c_star == 1.0:
        chi_c = float(chi1(w2, b2, activation))
    else:
        q = float(q_fixed_point(w2, b2, activation))
        chi_c = w2 * float(pair_moment(_dphi(activation), c_star, q, n_nodes=n_nodes))
    if chi_c >= 1.0:
        return math.inf
    return -1.0 / math.log(chi_c)


def random_deep_net(width: int, depth: int, sigma_w2: float, sigma_b2: float,
                    activation: str = "tanh", *, weights: str = "gaussian",
                    generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """An ``nn.Sequential`` of ``depth`` blocks [Linear(width, width), φ] at the mean-field initialisation.

    Weights W ~ N(0, σ_w²/width) (``"gaussian"``) or σ_w Q with Q Haar orthogonal
    (``"orthogonal"``, by :func:`torch.nn.init.orthogonal_`, which fixes the signs of the QR
    factors so that Q is Haar distributed); biases b ~ N(0, σ_b²) (Balboni §1.1). Sampled
    on the CPU from ``generator`` only: torch's global random state is not touched when a
    generator is given.
    """
    n = check_int(width, "width", minimum=1)
    L = check_int(depth, "depth", minimum=1)
    w2 = check_positive(sigma_w2, "sigma_w2")
    b2 = check_positive(sigma_b2, "sigma_b2", strict=False)
    check_choice(activation, "activation", ACTIVATIONS)
    check_choice(weights, "weights", ("gaussian", "orthogonal"))
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    layers: list[nn.Module] = []
    with torch.no_grad():
        for _ in range(L):
            lin = nn.utils.skip_init(nn.Linear, n, n, dtype=dtype)  # no default init: no global RNG draw
            if weights == "gaussian":
                lin.weight.normal_(0.0, math.sqrt(w2 / n), generator=generator)
            else:
                nn.init.orthogonal_(lin.weight, gain=math.sqrt(w2), generator=generator)
            lin.bias.normal_(0.0, math.sqrt(b2), generator=generator)
            layers += [lin, _module(activation)]
    return nn.Sequential(*layers)


_POINTWISE: dict[type, str] = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.Identity: "linear"}


def input_output_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """J = ∂f(x)/∂x for one input x of shape (n,); for the net of :func:`random_deep_net` J = D_L W_L ⋯ D_1 W_1 (Balboni §1.2, Pennington et al. 2017).

    D_l = diag φ'(z_l) holds the slopes at the pre-activations z_l. For an ``nn.Sequential`` of
    ``Linear``, ``Tanh``, ``ReLU`` and ``Identity`` modules the product is accumulated layer by
    layer in one forward pass (L matrix products); any other module goes through
    ``torch.func.jacrev``. The model's parameters are not changed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_tensor(x, "x", ndim=1)
    first = next(model.parameters(), None)
    if first is not None:
        check_same_device(x=x, model=first)
    if isinstance(model, nn.Sequential) and all(
            isinstance(m, nn.Linear) or type(m) in _POINTWISE for m in model):
        with torch.no_grad():
            J = torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
            h = x
            for m in model:
                if isinstance(m, nn.Linear):
                    J = m.weight @ J
                    h = m(h)
                else:
                    J = _dphi(_POINTWISE[type(m)])(h)[:, None] * J
                    h = m(h)
            return J
    return torch.func.jacrev(model)(x)


def input_output_jacobian_singular_values(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The singular values of J = ∂f(x)/∂x, in descending order (Balboni §1.2, dynamical isometry).

    Their mean square (1/n) tr(J Jᵀ) is close to χ₁^L for a wide net of depth L whose input has
    length q* (Pennington et al. 2017); dynamical isometry asks all of them to be close to 1.
    """
    with torch.no_grad():
        J = input_output_jacobian(model, x)
    return torch.linalg.svdvals(J.reshape(J.shape[0], -1))
