"""Gradient descent and gradient flow on least squares (Chiang §10.1).

Notation follows the book: data ``X`` of shape ``(N, d)``, targets ``y`` of shape ``(N,)``,
weights ``w`` of shape ``(d,)``, loss L(w) = ½‖y − Xw‖² (eq. 10.3).

* :func:`least_squares_gd` — the iterates of eq. 10.6, w ← w + η Xᵀ(y − Xw).
* :func:`least_squares_flow` — the exact solution of the gradient flow dw/dt = Xᵀ(y − Xw)
  (eq. 10.8) at any times, from the thin SVD X = U S Vᵀ:
  w(t) = w₀ + V (I − exp(−S² t)) Vᵀ (X⁺y − w₀).
* :func:`error_eigenbasis` and :func:`residual_flow` — the rotated errors
  u′ = Q(y − Xw) that decay independently, u′(t)[i] = exp(−Λ[i,i] t) u′(0)[i] (eq. 10.21).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .validation import check_int, check_positive, check_same_device, check_same_dtype, check_tensor

__all__ = [
    "least_squares_loss",
    "least_squares_gradient",
    "gradient_descent",
    "least_squares_gd",
    "least_squares_flow",
    "error_eigenbasis",
    "residual_flow",
]


def _check_problem(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, w_name: str = "w") -> None:
    check_tensor(X, "X", ndim=2)
    check_tensor(y, "y", shape=(X.shape[0],))
    check_tensor(w, w_name, shape=(X.shape[1],))
    check_same_device(X=X, y=y, **{w_name: w})
    check_same_dtype(X=X, y=y, **{w_name: w})


def _check_times(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        check_positive(t, "t", strict=False)
        t = torch.tensor([float(t)], dtype=like.dtype, device=like.device)
    check_tensor(t, "t", ndim=1)
    if bool((t < 0).any()):
        raise ValueError("t must contain only times >= 0")
    return t.to(dtype=like.dtype, device=like.device)


def least_squares_loss(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """L(w) = ½‖y − Xw‖² (Chiang eq. 10.3)."""
    _check_problem(X, y, w)
    r = y - X @ w
    return 0.5 * (r @ r)


def least_squares_gradient(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """∇L(w) = −Xᵀ(y − Xw), the transpose of the row vector of Chiang eq. 10.4."""
    _check_problem(X, y, w)
    return -(X.T @ (y - X @ w))


def gradient_descent(
    grad: Callable[[torch.Tensor], torch.Tensor],
    w0: torch.Tensor,
    lr: float,
    steps: int,
) -> torch.Tensor:
    """Iterates of gradient descent w_{k+1} = w_k − η ∇L(w_k) (Chiang eq. 10.5).

    Returns a tensor of shape ``(steps + 1, *w0.shape)`` whose row k is w_k (row 0 is w0).
    Raises ``FloatingPointError`` if an iterate stops being finite.
    """
    check_tensor(w0, "w0")
    lr = check_positive(lr, "lr")
    steps = check_int(steps, "steps", minimum=0)
    out = torch.empty((steps + 1, *w0.shape), dtype=w0.dtype, device=w0.device)
    out[0] = w0
    w = w0
    for k in range(steps):
        w = w - lr * grad(w)
        if not bool(torch.isfinite(w).all()):
            raise FloatingPointError(f"gradient descent diverged at step {k + 1} (lr={lr})")
        out[k + 1] = w
    return out


def least_squares_gd(
    X: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, lr: float, steps: int
) -> torch.Tensor:
    """Gradient-descent iterates on ½‖y − Xw‖²: w ← w + η Xᵀ(y − Xw) (Chiang eq. 10.6).

    Returns shape ``(steps + 1, d)``; iterate k approximates the flow at time t = kη.
    """
    _check_problem(X, y, w0, "w0")
    return gradient_descent(lambda w: -(X.T @ (y - X @ w)), w0, lr, steps)


def _rank_tolerance(s: torch.Tensor, size: int) -> float:
    """Singular values below this count as zero (the convention of numpy.linalg.matrix_rank)."""
    if s.numel() == 0:
        return 0.0
    return float(s.max()) * size * torch.finfo(s.dtype).eps


def least_squares_flow(
    X: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, t: torch.Tensor | float
) -> torch.Tensor:
    """Exact gradient-flow weights w(t) for dw/dt = Xᵀ(y − Xw) (Chiang eq. 10.8).

    With the thin SVD X = U S Vᵀ restricted to the r nonzero singular values,

        w(t) = w₀ + V (I − exp(−S² t)) Vᵀ (X⁺y − w₀),

    so the component of w₀ in the null space of X never moves and the rest converges to
    the minimum-norm least-squares solution X⁺y. ``t`` is a time or a 1-D tensor of times;
    the result has shape ``(len(t), d)``.
    """
    _check_problem(X, y, w0, "w0")
    times = _check_times(t, X)
    u, s, vh = torch.linalg.svd(X, full_matrices=False)
    keep = s > _rank_tolerance(s, max(X.shape))
    s, v = s[keep], vh[keep].T
    w_star = v @ ((u[:, keep].T @ y) / s)  # X⁺y, the minimum-norm solution
    coeff = v.T @ (w_star - w0)  # (r,)
    growth = -torch.expm1(-torch.outer(times, s**2))  # 1 - exp(-s² t), (T, r)
    return w0 + (growth * coeff) @ v.T


def error_eigenbasis(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of X Xᵀ as used in Chiang eqs. 10.11–10.20.

    Returns ``(lam, Q)`` with ``Q`` orthogonal (rows are eigenvectors) and
    ``Q X Xᵀ Qᵀ = diag(lam)``, eigenvalues sorted in decreasing order and clipped at 0
    (X Xᵀ is positive semi-definite; round-off can make zero eigenvalues slightly negative).
    """
    check_tensor(X, "X", ndim=2)
    lam, vecs = torch.linalg.eigh(X @ X.T)
    order = torch.argsort(lam, descending=True)
    return lam[order].clamp_min(0.0), vecs[:, order].T


def residual_flow(
    X: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, t: torch.Tensor | float
) -> torch.Tensor:
    """Rotated errors u′(t) = exp(−Λ t) u′(0) along the gradient flow (Chiang eq. 10.21).

    Here u′ = Q(y − Xw) with ``Q`` from :func:`error_eigenbasis`. Returns shape
    ``(len(t), N)``; column i decays at rate Λ[i,i] and stays constant where Λ[i,i] = 0.
    """
    _check_problem(X, y, w0, "w0")
    times = _check_times(t, X)
    lam, Q = error_eigenbasis(X)
    u0 = Q @ (y - X @ w0)
    return torch.exp(-torch.outer(times, lam)) * u0
