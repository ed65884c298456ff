"""The Polyak–Łojasiewicz condition measured on real objectives (chapter 8).

Balboni ch. 4, ch. 6 and appendix B {balboni2025optimization}:

* :func:`local_pl_coefficient` — the local PL coefficient μ(x) = ‖∇f(x)‖² / (2 (f(x) − f*))
  of Balboni eq. 6.2 (convention of eq. 4.1: ½‖∇f‖² ≥ μ (f − f*)).
* :func:`pl_rate`, :func:`linear_rate_bound`, :func:`distance_bound` — the contraction factor
  γ = 1 − μ/L of Lemma 1 (eq. 4.3), the gap bound ξ₀ γᵏ and the corrected radius of eq. 4.4.
* :func:`pl_product_bound` — Lemma 11 (eq. 6.5): ξ_k ≤ ξ₀ ∏_{i<k} (1 − μ(x_i)/L).
* :class:`GDPLTrace`, :func:`gd_local_pl` — full-batch gradient descent on a module with the
  gap and μ(x_k) recorded at every step (the module is not modified).
* :class:`Conditioning`, :func:`kernel_conditioning`, :func:`ntk_conditioning` — extreme
  eigenvalues, condition number and the Gershgorin proxy of a Gram matrix (eq. 4.9), for the
  tangent kernel K = J Jᵀ of Lemma 2 via :mod:`nnopt.ntk`.
* :func:`centred_relu`, :func:`dual_relu` — the centred, unit-variance ReLU and its dual
  activation (Def. 14, eq. B.28).
* :func:`random_gram_condition`, :func:`balboni_condition_factor` — the condition number of a
  Gaussian Gram matrix from the Marchenko–Pastur edges, and the factor of Balboni eq. 6.8.
* :func:`pl_stability_bound`, :func:`stability_generalization_bound` — Lemma 3 (eqs 4.12–4.13,
  after Charles and Papailiopoulos): pointwise hypothesis stability of a PL risk and the
  resulting generalisation bound.
* :func:`gram_lower_bound`, :func:`mlp_feature_shift_bound` — the Weyl-type lower bound of
  eq. 4.11 on λmin of a feature Gram matrix, and a weight-distance bound on the feature shift.
* :func:`layer_constants` — Lipschitz and smoothness constants of a layer x ↦ M φ(x) (Lemma 21,
  eqs B.17–B.18, with the smoothness constant corrected to the largest column norm of M).
* :func:`weak_pl_rate` — the contraction factor of Lemma 22 (eq. B.27) for weakly PL functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .autodiff import loss_value
from .curvature import gd_with_sharpness
from .linalg import gershgorin_bounds
from .ntk import empirical_ntk, ntk_matrix
from .propagation import arccos_kernel
from .validation import (check_callable, check_int, check_positive, check_real, check_same_device,
                         check_tensor)

__all__ = [
    "local_pl_coefficient", "pl_rate", "linear_rate_bound", "distance_bound", "pl_product_bound",
    "GDPLTrace", "gd_local_pl", "Conditioning", "kernel_conditioning", "ntk_conditioning",
    "centred_relu", "dual_relu", "random_gram_condition", "balboni_condition_factor", "pl_stability_bound",
    "stability_generalization_bound", "gram_lower_bound", "mlp_feature_shift_bound",
    "layer_constants", "weak_pl_rate",
]


def local_pl_coefficient(gradient: torch.Tensor, loss: float | torch.Tensor,
                         loss_star: float = 0.0) -> float:
    """The local PL coefficient μ(x) = ‖∇f(x)‖² / (2 (f(x) − f*)) (Balboni eq. 6.2).

    With the convention of Balboni eq. 4.1 (½‖∇f‖² ≥ μ (f − f*)), f is μ-PL exactly when
    μ(x) ≥ μ at every x. ``gradient`` is ∇f(x) of any shape (flattened), ``loss`` is f(x) and
    ``loss_star`` the minimum value f* (0 for an interpolating model). Requires f(x) > f*.
    """
    g = check_tensor(gradient, "gradient")
    f = check_real(loss, "loss")
    f_star = check_real(loss_star, "loss_star")
    if not f > f_star:
        raise ValueError(f"loss must exceed loss_star (the gap f - f* must be > 0), got {f} <= {f_star}")
    gg = g.detach().to(torch.float64).reshape(-1)
    return float(gg @ gg) / (2.0 * (f - f_star))


def pl_rate(mu: float, smoothness: float) -> float:
    """The contraction factor γ = 1 − μ/L of Lemma 1 (Balboni eq. 4.3).

    A μ-PL, L-smooth function has μ ≤ L (apply both inequalities at one point), so γ ∈ [0, 1).
    """
    mu = check_positive(mu, "mu")
    L = check_positive(smoothness, "smoothness")
    if mu > L:
        raise ValueError(f"mu must be <= smoothness (a mu-PL, L-smooth f has mu <= L), got {mu} > {L}")
    return 1.0 - mu / L


def linear_rate_bound(gap0: float, mu: float, smoothness: float, steps: int) -> torch.Tensor:
    """The Lemma 1 bound ξ_k ≤ ξ₀ γᵏ with γ = 1 − μ/L (Balboni eq. 4.3), for k = 0, …, steps.

    Holds for gradient descent with step 1/L (eq. 4.2) on a μ-PL, L-smooth function.
    Returns a float64 tensor of length ``steps + 1``.
    """
    xi0 = check_positive(gap0, "gap0", strict=False)
    gamma = pl_rate(mu, smoothness)
    k = check_int(steps, "steps", minimum=0)
    return xi0 * gamma ** torch.arange(k + 1, dtype=torch.float64)


def distance_bound(gap0: float, mu: float, smoothness: float) -> float:
    """Radius R = √(2 ξ₀ / L) / (1 − √γ) of the GD iterates: ‖x_k − x₀‖ ≤ R for all k.

    The corrected Balboni eq. 4.4 (the printed version has a spurious factor 1/L on the
    left): each step has length ‖∇f(x_j)‖/L ≤ √(2 ξ_j / L) ≤ √(2 ξ₀ γʲ / L), and the
    geometric series sums to R. Here γ = 1 − μ/L.
    """
    xi0 = check_positive(gap0, "gap0", strict=False)
    gamma = pl_rate(mu, smoothness)
    return math.sqrt(2.0 * xi0 / float(smoothness)) / (1.0 - math.sqrt(gamma))


def pl_product_bound(gap0: float, mus: torch.Tensor, smoothness: float) -> torch.Tensor:
    """Lemma 11 (Balboni eq. 6.5): B_k = ξ₀ ∏_{i<k} (1 − μ(x_i)/L), for k = 0, …, len(mus).

    For GD with step 1/L on an L-smooth f, ξ_k = f(x_k) − f* ≤ B_k, where μ(x_i) are the local
    PL coefficients (eq. 6.2) at the iterates. A factor is clipped at 0 (a local coefficient
    above L can only come from an L that is too small). Returns float64, length len(mus) + 1.
    """
    xi0 = check_positive(gap0, "gap0", strict=False)
    m = check_tensor(mus, "mus", ndim=1).detach().to(torch.float64)
    if bool((m < 0).any()):
        raise ValueError("mus must be >= 0 (local PL coefficients are ratios of non-negative numbers)")
    L = check_positive(smoothness, "smoothness")
    factors = (1.0 - m / L).clamp_min(0.0)
    return xi0 * torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(factors, 0)])


@dataclass(frozen=True)
class GDPLTrace:
    """A gradient-descent run: the gaps ξ_k, squared gradient norms and μ(x_k) (eq. 6.2).

    ``gaps`` has length steps + 1 (ξ at x₀ … x_steps); ``grad_sq`` and ``mus`` have length
    steps (measured at x₀ … x_{steps−1}, the points the steps start from); ``params`` is the
    final parameter dict. A run whose loss stopped being finite ends at that point: all three
    are then as long as the steps taken plus one, and the last gap is not finite.
    """

    gaps: torch.Tensor
    grad_sq: torch.Tensor
    mus: torch.Tensor
    lr: float
    params: dict[str, torch.Tensor]


def gd_local_pl(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                x: torch.Tensor, y: torch.Tensor, *, lr: float, steps: int,
                loss_star: float = 0.0) -> GDPLTrace:
    """Full-batch GD x_{k+1} = x_k − lr ∇f(x_k) with μ(x_k) = ‖∇f(x_k)‖² / (2 ξ_k) recorded.

    The measurement of Balboni §6.2 (eq. 6.2 with f* = ``loss_star``, 0 for an
    overparameterised model fitting its data). The run is
    :func:`nnopt.curvature.gd_with_sharpness` without sharpness estimates, which records the
    loss and the squared gradient norm at every step; this adds the gap after the last step
    and the μ's (a run whose loss stops being finite ends early). Works on a copy of the
    parameters; the module is not modified. When the gap
    reaches 0, μ is recorded as 0 from there on.
    """
    n_steps = check_int(steps, "steps", minimum=1)  # the model and data: gd_with_sharpness
    f_star = check_real(loss_star, "loss_star")
    run = gd_with_sharpness(model, loss_fn, x, y, lr=lr, steps=n_steps, every=None)
    # a diverged run stopped before its last step, whose (non-finite) loss is already recorded
    final = [] if run.diverged else [float(loss_value(model, loss_fn, x, y, run.params))]
    gaps = torch.tensor(run.loss + final, dtype=torch.float64) - f_star
    grad_sq = torch.tensor(run.grad_sq, dtype=torch.float64)
    live = gaps[:len(grad_sq)] > 0
    mus = torch.where(live, grad_sq / (2.0 * gaps[:len(grad_sq)].where(live, torch.ones(()))),
                      0.0)
    return GDPLTrace(gaps, grad_sq, mus, float(lr), run.params)


@dataclass(frozen=True)
class Conditioning:
    """Spectrum summary of a symmetric PSD Gram matrix (Balboni eq. 4.9 and §6.3).

    ``condition_number`` = λmax / λmin (infinite when λmin ≤ 0); ``gershgorin_lower`` and
    ``gershgorin_upper`` are min_i (a_ii − R_i) and max_i (a_ii + R_i) with R_i the
    off-diagonal row sum of absolute values; ``max_offdiag_rowsum`` = max_i R_i (the proxy of
    Balboni Fig. 6.9); ``min_diag`` and ``max_offdiag`` are the entries compared in Fig. 6.10.
    """

    lambda_min: float
    lambda_max: float
    condition_number: float
    gershgorin_lower: float
    gershgorin_upper: float
    max_offdiag_rowsum: float
    min_diag: float
    max_offdiag: float


def kernel_conditioning(gram: torch.Tensor) -> Conditioning:
    """λmin, λmax, κ = λmax/λmin and the Gershgorin proxy of a symmetric Gram matrix.

    The eigenvalues come from a dense float64 ``eigvalsh``; the Gershgorin interval
    [min_i (a_ii − R_i), max_i (a_ii + R_i)], R_i = Σ_{j≠i} of the absolute values of a_ij,
    contains them all (:func:`nnopt.linalg.gershgorin_bounds`) and costs no eigen-solve
    (Balboni §6.3, "Practical conditioning proxy").
    """
    A = check_tensor(gram, "gram", ndim=2).detach().to(torch.float64)
    n, m = A.shape
    if n != m or n == 0:
        raise ValueError(f"gram must be square and non-empty, got shape {tuple(A.shape)}")
    lo, hi = gershgorin_bounds(A)
    ev = torch.linalg.eigvalsh(0.5 * (A + A.T))
    lmin, lmax = float(ev[0]), float(ev[-1])
    off = (A - torch.diag(torch.diagonal(A))).abs()
    kappa = lmax / lmin if lmin > 0 else math.inf
    return Conditioning(lmin, lmax, kappa, lo, hi, float(off.sum(dim=1).max()),
                        float(torch.diagonal(A).min()), float(off.max()))


def ntk_conditioning(model: nn.Module, x: torch.Tensor) -> Conditioning:
    """Conditioning of the tangent kernel K = J Jᵀ of Lemma 2 (Balboni eq. 4.9, K^{m;θ}).

    K is the (n·O) × (n·O) empirical NTK of ``model`` on ``x`` (:func:`nnopt.ntk.empirical_ntk`
    flattened by :func:`nnopt.ntk.ntk_matrix`). Lemma 2 (with its factor 2 restored, book
    chapter 8) makes its smallest eigenvalue times the loss's PL constant μ a PL constant of L∘F
    at this point: a lower bound on the local PL coefficient of L∘F, not its value.
    """
    return kernel_conditioning(ntk_matrix(empirical_ntk(model, x)))


_RELU_MEAN = 1.0 / math.sqrt(2.0 * math.pi)  # E[max(Z, 0)], Z ~ N(0, 1)
_RELU_STD = math.sqrt(0.5 - 1.0 / (2.0 * math.pi))  # (E[max(Z, 0)²] − E[max(Z, 0)]²)^½


def centred_relu(t: torch.Tensor) -> torch.Tensor:
    """The centred, unit-variance ReLU σ(t) = (max(t, 0) − 1/√(2π)) / √(1/2 − 1/(2π)) (Balboni eq. B.28).

    E[σ(Z)] = 0 and E[σ(Z)²] = 1 for Z ~ N(0, 1) (E[max(Z, 0)] = 1/√(2π), E[max(Z, 0)²] = 1/2);
    its dual activation is :func:`dual_relu`.
    """
    t = check_tensor(t, "t")
    return (torch.relu(t) - _RELU_MEAN) / _RELU_STD


def dual_relu(rho: torch.Tensor) -> torch.Tensor:
    """Dual activation of the centred, unit-variance ReLU (Balboni Def. 14, eq. B.28).

    For σ = :func:`centred_relu`, σ̂(ρ) = E[σ(X)σ(Y)] for standard normal X, Y with correlation ρ.
    Expanding the product, σ̂(ρ) = (K(ρ) − 1/(2π)) / (1/2 − 1/(2π)) with K the arc-cosine
    kernel of degree 1 (:func:`nnopt.propagation.arccos_kernel`, q = 1), that is
    σ̂(ρ) = (√(1 − ρ²) + (π − arccos ρ) ρ − 1) / (π − 1). So σ̂(1) = 1 and σ̂(0) = 0.
    Entries of ``rho`` must lie in [−1, 1].
    """
    r = check_tensor(rho, "rho")
    if bool((r.abs() > 1 + 1e-12).any()):
        raise ValueError("rho must have entries in [-1, 1] (correlations)")
    kernel = torch.as_tensor(arccos_kernel(r.clamp(-1.0, 1.0)))  # float64
    return ((kernel - _RELU_MEAN**2) / _RELU_STD**2).to(r.dtype)


def _sizes(n: int, width: int) -> tuple[int, int]:
    n = check_int(n, "n", minimum=1)
    w = check_int(width, "width", minimum=1)
    if not w > n:
        raise ValueError(f"width must be > n for a full-rank Gram matrix, got width={w}, n={n}")
    return n, w


def random_gram_condition(n: int, width: int) -> float:
    """κ(G) ≈ ((√w + √n) / (√w − √n))² for G = F Fᵀ, F an n × w Gaussian matrix.

    The singular values of F concentrate in [√w − √n, √w + √n] (Marchenko–Pastur edges; the
    lower edge is the Rudelson–Vershynin theorem cited by Balboni §6.3), and the eigenvalues of
    G are their squares. Requires width > n.
    """
    n, w = _sizes(n, width)
    return ((math.sqrt(w) + math.sqrt(n)) / (math.sqrt(w) - math.sqrt(n))) ** 2


def balboni_condition_factor(n: int, width: int) -> float:
    """The factor 1 / (1/√n − 1/√w) = √(n w) / (√w − √n) of Balboni eq. 6.8. Requires width > n."""
    n, w = _sizes(n, width)
    return 1.0 / (1.0 / math.sqrt(n) - 1.0 / math.sqrt(w))


def pl_stability_bound(gap: float, mu: float, lipschitz: float, n: int) -> float:
    """Pointwise hypothesis stability of GD on a μ-PL empirical risk (Balboni eq. 4.12).

    β ≤ 2 √ε_A · √(2G²/μ) + 2G² / (μ (n − 1)), after Charles and Papailiopoulos (2018, Thm 3),
    where ε_A = R_S(w_S) − R_S(w_S*) is the optimisation error (``gap``), G the Lipschitz
    constant of the per-example loss in the parameters and n ≥ 2 the number of examples.
    """
    eps = check_positive(gap, "gap", strict=False)
    m = check_positive(mu, "mu")
    G = check_positive(lipschitz, "lipschitz", strict=False)
    n_ = check_int(n, "n", minimum=2)
    c = 2.0 * G * G / m
    return 2.0 * math.sqrt(eps) * math.sqrt(c) + c / (n_ - 1)


def stability_generalization_bound(beta: float, loss_bound: float, n: int, delta: float) -> float:
    """Generalisation bound from pointwise hypothesis stability (Balboni eq. 4.13).

    With probability at least 1 − δ, the difference of population and empirical risk is at most
    √((M² + 12 M n β) / (2 n δ)), for a loss with values in [0, M] (Bousquet and Elisseeff's
    hypothesis-stability bound, as used by Charles and Papailiopoulos). Since that difference
    never exceeds M, the bound is vacuous when it is ≥ M.
    """
    b = check_positive(beta, "beta", strict=False)
    M = check_positive(loss_bound, "loss_bound")
    n_ = check_int(n, "n", minimum=1)
    d = check_positive(delta, "delta")
    if d >= 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    return math.sqrt((M * M + 12.0 * M * n_ * b) / (2.0 * n_ * d))


def gram_lower_bound(features0: torch.Tensor, shift: float) -> float:
    """λmin(F Fᵀ) ≥ λmin(F₀F₀ᵀ) − δ (2 σmax(F₀) + δ) whenever σmax(F − F₀) ≤ δ (Balboni eq. 4.11).

    Weyl's inequality gives λmin(A) ≥ λmin(B) − ‖A − B‖₂ (eq. 4.11 with A, B the Gram
    matrices, whose eigenvalues are their singular values), and
    F Fᵀ − F₀F₀ᵀ = (F − F₀)F₀ᵀ + F₀(F − F₀)ᵀ + (F − F₀)(F − F₀)ᵀ has spectral norm at most
    δ (2 σmax(F₀) + δ). ``features0`` is the n × k feature matrix F₀; ``shift`` is δ (a bound
    on the spectral or Frobenius norm of F − F₀). The bound is vacuous when it is ≤ 0.
    """
    F0 = check_tensor(features0, "features0", ndim=2).detach().to(torch.float64)
    dlt = check_positive(shift, "shift", strict=False)
    ev = torch.linalg.eigvalsh(F0 @ F0.T)
    smax = math.sqrt(max(float(ev[-1]), 0.0))
    return float(ev[0]) - dlt * (2.0 * smax + dlt)


def mlp_feature_shift_bound(weights0: list[torch.Tensor], weights: list[torch.Tensor],
                            x: torch.Tensor,
                            activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu
                            ) -> torch.Tensor:
    """Per-example bound on the change of the features of a bias-free MLP (for eq. 4.11).

    For h_l = φ(W_l h_{l−1}), h_0 = x, with φ 1-Lipschitz (ReLU, tanh), and weights W_l⁰ → W_l:
    d_l ≤ σmax(W_l − W_l⁰) ‖h_{l−1}⁰‖ + (σmax(W_l⁰) + σmax(W_l − W_l⁰)) d_{l−1}, d_0 = 0,
    from W h − W⁰h⁰ = (W − W⁰) h⁰ + W (h − h⁰). ``activation`` is φ (1-Lipschitz; it is
    only evaluated on the initial network to get ‖h_l⁰‖). Uses only the initial network and the weight
    distances, as the bounds of Liu, Zhu and Belkin do. Returns the d_L of the last listed layer
    for every row of ``x`` (float64); the root of their sum of squares bounds ‖F − F⁰‖_F.
    """
    check_callable(activation, "activation")
    if not isinstance(weights0, (list, tuple)) or not isinstance(weights, (list, tuple)):
        raise TypeError("weights0 and weights must be lists of 2-D tensors")
    if len(weights0) != len(weights) or len(weights0) == 0:
        raise ValueError(f"weights0 and weights must be non-empty and of equal length, got "
                         f"{len(weights0)} and {len(weights)}")
    h = check_tensor(x, "x", ndim=2).detach().to(torch.float64)
    d = torch.zeros(h.shape[0], dtype=torch.float64, device=h.device)
    for i, (A0, A) in enumerate(zip(weights0, weights)):
        A0 = check_tensor(A0, f"weights0[{i}]", ndim=2).detach().to(torch.float64)
        A = check_tensor(A, f"weights[{i}]", ndim=2).detach().to(torch.float64)
        check_same_device(x=h, **{f"weights0[{i}]": A0, f"weights[{i}]": A})
        if A0.shape != A.shape or A0.shape[1] != h.shape[1]:
            raise ValueError(f"weights[{i}] must have shape (out, {h.shape[1]}) equal to weights0[{i}], "
                             f"got {tuple(A.shape)} and {tuple(A0.shape)}")
        s_delta = float(torch.linalg.matrix_norm(A - A0, 2))
        s0 = float(torch.linalg.matrix_norm(A0, 2))
        d = s_delta * h.norm(dim=1) + (s0 + s_delta) * d
        h = activation(h @ A0.T)
    return d


def layer_constants(weight: torch.Tensor, dphi_max: float, d2phi_max: float) -> tuple[float, float]:
    """Lipschitz and smoothness constants of the layer f(x) = M φ(x) (Balboni Lemma 21).

    G_f ≤ σmax(M) · max φ′ (eq. B.17) and L_f ≤ max_j ‖M_{:,j}‖₂ · max φ″, where max φ′ and
    max φ″ bound the absolute derivatives on the input range. Here L_f is the smoothness
    constant of eq. B.2 for the vector-valued f, sup ‖J(x) − J(x′)‖₂ / ‖x − x′‖, equivalently
    sup over unit u of the norm of the Hessian of uᵀf. The printed eq. B.18 has max_ij of the
    entries of M instead of the largest column norm: that is the constant of one output
    coordinate f_i, and it is too small by up to a factor √p for p outputs (attained by a
    matrix of equal entries with φ″ constant).
    """
    M = check_tensor(weight, "weight", ndim=2).detach().to(torch.float64)
    g1 = check_positive(dphi_max, "dphi_max", strict=False)
    g2 = check_positive(d2phi_max, "d2phi_max", strict=False)
    return float(torch.linalg.matrix_norm(M, 2)) * g1, float(M.norm(dim=0).max()) * g2


def weak_pl_rate(gap: float, distance: float, mu: float, smoothness: float) -> float:
    """The factor 1 − μ ξ / (2 L ‖x − x*‖²) of Lemma 22 (Balboni eq. B.27, Csiba and Richtárik).

    For an L-smooth, weakly μ-PL f (‖∇f(x)‖ ‖x − x*‖ ≥ √μ ξ(x), eq. B.25), one step
    x ← x − ∇f(x)/L gives ξ⁺ ≤ (1 − μ ξ / (2 L ‖x − x*‖²)) ξ. ``gap`` is ξ = f(x) − f*,
    ``distance`` is ‖x − x*‖ > 0. The result is clipped at 0.
    """
    xi = check_positive(gap, "gap", strict=False)
    r = check_positive(distance, "distance")
    m = check_positive(mu, "mu")
    L = check_positive(smoothness, "smoothness")
    return max(0.0, 1.0 - m * xi / (2.0 * L * r * r))
