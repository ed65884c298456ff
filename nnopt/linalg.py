"""Matrix-free eigenvalue estimation for symmetric operators.

The sharpness of a loss, λmax(∇²L(w)), is the smallest β for which L is β-smooth near w
(Chiang Def. 10.1 and the remark after it), and gradient descent with step η is only
guaranteed to descend when η < 2/β (Chiang Lemma 10.2). A network's Hessian is too large to
form, but a Hessian-vector product is cheap, so this module works with *operators*: any
object with

* ``matvec(v)`` — the product A v of a vector of length ``size``,
* ``size`` — the dimension n of the (square, symmetric) matrix A,
* ``dtype`` and ``device`` — those of the vectors it takes and returns.

:class:`DenseOperator` wraps an explicit matrix (for tests) and :class:`FunctionOperator` a
function ``v ↦ A v``. On any of them:

* :func:`power_iteration` — v ← A v / ‖A v‖; converges to the eigenvalue of largest
  *magnitude*, at the rate |λ₂/λ₁|ᵏ.
* :func:`lanczos` — the Lanczos process with full reorthogonalisation into a preallocated
  basis Q, A Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ; the Ritz values (eigenvalues of the
  tridiagonal T_m) approximate the *algebraically* largest eigenvalues and converge at a
  Chebyshev rate, much faster than power iteration.
* :func:`gershgorin_bounds` — an interval that contains every eigenvalue of a symmetric
  matrix, from the Gershgorin discs |λ − a_ii| ≤ Σ_{j≠i} |a_ij| (the proxy of Balboni §7.6).

Every estimate carries its residual r = A v − θ v with ‖v‖ = 1. For a symmetric A there is
an eigenvalue λ with |λ − θ| ≤ ‖r‖ (the Bauer–Fike / Krylov–Weinstein bound), which is the
error bound these functions certify; an iterative method reports ``converged=True`` only
when ‖r‖ ≤ tol · |θ|.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

from .device import make_generator
from .validation import all_finite, check_callable, check_int, check_positive, check_tensor

__all__ = [
    "LinearOperator",
    "DenseOperator",
    "FunctionOperator",
    "as_operator",
    "EigenResult",
    "StoredShapeOperator",
    "power_iteration",
    "lanczos",
    "gershgorin_bounds",
]


@runtime_checkable
class LinearOperator(Protocol):
    """The matrix-free protocol: a square symmetric n × n matrix known through A v."""

    @property
    def size(self) -> int: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def matvec(self, v: torch.Tensor) -> torch.Tensor: ...


class DenseOperator:
    """An explicit square matrix A seen as an operator (``matvec(v) = A @ v``).

    ``check_symmetric=True`` (the default) refuses a matrix with
    ‖A − Aᵀ‖_max > 1e-6 · ‖A‖_max (scaled by the dtype), since Lanczos and the residual
    bound assume symmetry.
    """

    def __init__(self, matrix: torch.Tensor, *, check_symmetric: bool = True) -> None:
        check_tensor(matrix, "matrix", ndim=2)
        n, m = matrix.shape
        if n != m or n == 0:
            raise ValueError(f"matrix must be square and non-empty, got shape {tuple(matrix.shape)}")
        if check_symmetric:
            scale = float(matrix.abs().max()) if n else 0.0
            tol = max(1e-6 if matrix.dtype == torch.float32 else 1e-10, 0.0) * max(scale, 1e-300)
            if float((matrix - matrix.T).abs().max()) > tol:
                raise ValueError("matrix must be symmetric (A = Aᵀ)")
        self.matrix = matrix
        self.n_matvecs = 0

    @property
    def size(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.n_matvecs += 1
        return self.matrix @ v


class StoredShapeOperator:
    """Base for operators whose size, dtype and device are fixed at construction.

    Subclasses call ``_set_shape(size, dtype, device)`` and implement ``matvec``; this class
    provides the three protocol properties and the ``n_matvecs`` counter.
    """

    _size: int
    _dtype: torch.dtype
    _device: torch.device
    n_matvecs: int

    def _set_shape(self, size: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self._size = check_int(size, "size", minimum=1)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self._dtype = dtype
        self._device = torch.device(device)
        self.n_matvecs = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device


class FunctionOperator(StoredShapeOperator):
    """An operator given by a function ``fn(v) = A v`` on vectors of length ``size``."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], size: int, *,
                 dtype: torch.dtype = torch.float64,
                 device: torch.device | str = "cpu") -> None:
        check_callable(fn, "fn")
        self._fn = fn
        self._set_shape(size, dtype, device)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.n_matvecs += 1
        return self._fn(v)


def as_operator(A: object, name: str = "A") -> LinearOperator:
    """A square symmetric tensor becomes a :class:`DenseOperator`; an operator is returned as is."""
    if isinstance(A, torch.Tensor):
        return DenseOperator(A)
    if isinstance(A, LinearOperator):
        size = A.size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{name}.size must be a positive integer, got {size!r}")
        return A
    raise TypeError(f"{name} must be a square torch.Tensor or an operator with matvec, size, "
                    f"dtype and device, got {type(A).__name__}")


@dataclass
class EigenResult:
    """An eigenvalue estimate with its certificate.

    Attributes
    ----------
    value
        The estimate θ of the wanted eigenvalue (the top one for Lanczos).
    vector
        The unit vector v with Rayleigh quotient θ = vᵀ A v.
    residual
        A bound on ‖A v − θ v‖ (for a symmetric A some eigenvalue lies within ‖A v − θ v‖ of θ):
        computed directly by power iteration; for Lanczos the recurrence's |β_m e_mᵀ s| plus a
        rounding allowance (see :func:`lanczos`).
    n_matvecs
        How many products A v were used.
    converged
        Whether ``residual <= tol * |value|`` was reached.
    values, vectors, residuals
        For Lanczos: the top-k Ritz values (descending), their unit Ritz vectors (columns)
        and residual norms; for power iteration these hold the single estimate.
    history
        The estimate θ after every iteration (to measure convergence against a reference).
    """

    value: float
    vector: torch.Tensor
    residual: float
    n_matvecs: int
    converged: bool
    values: torch.Tensor = field(repr=False, default_factory=lambda: torch.empty(0))
    vectors: torch.Tensor = field(repr=False, default_factory=lambda: torch.empty(0))
    residuals: torch.Tensor = field(repr=False, default_factory=lambda: torch.empty(0))
    history: list[float] = field(repr=False, default_factory=list)

    @property
    def error_bound(self) -> float:
        """The certified absolute error ‖r‖ (distance from θ to the nearest eigenvalue)."""
        return self.residual

    @property
    def relative_error_bound(self) -> float:
        """‖r‖ / |θ| (infinite when θ = 0)."""
        return self.residual / abs(self.value) if self.value != 0 else math.inf


def _start_vector(op: LinearOperator, v0: torch.Tensor | None,
                  seed: int | torch.Generator | None) -> torch.Tensor:
    if v0 is not None:
        check_tensor(v0, "v0", shape=(op.size,))
        v = v0.to(dtype=op.dtype, device=op.device)
        norm = float(torch.linalg.vector_norm(v))
        if norm == 0.0:
            raise ValueError("v0 must be a nonzero vector")
        return v / norm
    if isinstance(seed, torch.Generator):
        gen = seed
    else:
        gen = make_generator(0 if seed is None else seed)
    v = torch.randn(op.size, generator=gen, dtype=op.dtype, device=gen.device).to(op.device)
    return v / torch.linalg.vector_norm(v)


def _check_result_vector(w: torch.Tensor, op: LinearOperator) -> torch.Tensor:
    if not isinstance(w, torch.Tensor) or w.shape != (op.size,):
        raise ValueError(f"A.matvec must return a vector of shape ({op.size},), got "
                         f"{getattr(w, 'shape', type(w).__name__)}")
    if not all_finite(w):
        raise FloatingPointError("A.matvec returned non-finite values")
    return w


def _ritz_pairs(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and unit eigenvectors (columns) of the symmetric tridiagonal
    matrix with diagonal ``alpha`` and off-diagonal ``beta``, in float64."""
    theta, S = eigh_tridiagonal(alpha, beta)
    return theta[::-1].copy(), S[:, ::-1].copy()


def power_iteration(A: object, *, v0: torch.Tensor | None = None, tol: float = 1e-6,
                    max_iter: int = 1000, seed: int | torch.Generator | None = None
                    ) -> EigenResult:
    """The eigenvalue of largest magnitude of a symmetric A by power iteration.

    Iterates v_{k+1} = A v_k / ‖A v_k‖ and reports the Rayleigh quotient θ_k = v_kᵀ A v_k.
    Each iteration costs one product A v (the product of the last iterate is reused for
    its residual, so ``n_matvecs`` equals the number of iterations). Stops when the
    residual ‖A v − θ v‖ ≤ tol · |θ|, or after ``max_iter`` products.

    Power iteration converges to the eigenvalue of largest |λ|: on an indefinite matrix
    whose most negative eigenvalue is the largest in magnitude it returns that one, not
    λmax — use :func:`lanczos` for the top algebraic eigenvalue.

    Parameters
    ----------
    A
        A square symmetric tensor or an operator (``matvec``, ``size``, ``dtype``, ``device``).
    v0
        Start vector (default: a Gaussian vector from ``seed``); need not be normalised.
    tol
        Relative residual at which to stop (``tol=0`` runs all ``max_iter`` products).
    max_iter
        Maximum number of products A v.
    seed
        Seed (or a ``torch.Generator``) for the random start vector.
    """
    op = as_operator(A)
    tol = check_positive(tol, "tol", strict=False)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    v = _start_vector(op, v0, seed)
    history: list[float] = []
    theta, res, converged = 0.0, math.inf, False
    n = 0
    for _ in range(max_iter):
        w = _check_result_vector(op.matvec(v), op)
        n += 1
        theta = float(v @ w)
        res = float(torch.linalg.vector_norm(w - theta * v))
        history.append(theta)
        if res <= tol * abs(theta):
            converged = True
            break
        norm = float(torch.linalg.vector_norm(w))
        if norm == 0.0:  # v lies in the null space: 0 is an eigenvalue
            converged = True
            break
        if n < max_iter:
            v = w / norm
    return EigenResult(value=theta, vector=v, residual=res, n_matvecs=n, converged=converged,
                       values=torch.tensor([theta]), vectors=v[:, None],
                       residuals=torch.tensor([res]), history=history)


def lanczos(A: object, k: int = 1, *, v0: torch.Tensor | None = None, tol: float = 1e-6,
            max_iter: int | None = None, seed: int | torch.Generator | None = None,
            min_iter: int = 1) -> EigenResult:
    """The k algebraically largest eigenvalues of a symmetric A by Lanczos.

    Builds an orthonormal basis q₁, …, q_m of the Krylov space span{v₀, A v₀, …, A^{m−1} v₀}
    in a preallocated (m+1) × n array (one contiguous row per vector), with full reorthogonalisation (each new vector is
    orthogonalised twice against all previous ones, so the basis stays orthonormal to
    working precision and no spurious copies of converged Ritz values appear). The
    recurrence A Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ with tridiagonal T_m gives, for each
    eigenpair (θ_i, s_i) of T_m, the Ritz vector u_i = Q_m s_i and, in exact arithmetic, the
    residual norm ‖A u_i − θ_i u_i‖ = |β_m| |e_mᵀ s_i| without another product. In floating
    point the recurrence holds only up to rounding errors of order ε‖A‖ per step (Paige), so the
    reported residual adds the allowance m·ε·max_i|θ_i| (ε the dtype's machine epsilon) to
    |β_m e_mᵀ s_i|; without it a converged Krylov space would report a bound of exactly 0.

    The Ritz values never exceed λmax (Rayleigh–Ritz), and a more negative eigenvalue of
    larger magnitude does not attract the top Ritz value as it attracts power iteration.

    Stops when the top-k residuals are all ≤ tol · |θ_i| (``converged=True``), when the
    Krylov space becomes invariant (β_m ≈ 0: the Ritz values are eigenvalues to working
    precision; ``converged`` still only if the residuals pass the test), or
    after ``max_iter`` products (default min(n, 200)). ``min_iter`` delays the first
    convergence test (a larger Krylov space before stopping makes it less likely that a
    start vector poor in the top eigenvector certifies the second eigenvalue instead).

    Returns an :class:`EigenResult` whose ``value``/``vector``/``residual`` describe the top
    Ritz pair and ``values``/``vectors``/``residuals`` the top k (descending).
    """
    op = as_operator(A)
    k = check_int(k, "k", minimum=1)
    if k > op.size:
        raise ValueError(f"k must be at most the size of A ({op.size}), got {k}")
    tol = check_positive(tol, "tol", strict=False)
    m_max = min(op.size, 200) if max_iter is None else check_int(max_iter, "max_iter", minimum=1)
    m_max = min(m_max, op.size)
    if m_max < k:
        raise ValueError(f"max_iter must be at least k={k}, got {m_max}")
    min_iter = min(check_int(min_iter, "min_iter", minimum=1), m_max)
    q = _start_vector(op, v0, seed)

    n = op.size
    # preallocated basis, one contiguous row per Lanczos vector
    Q = torch.empty((m_max + 1, n), dtype=op.dtype, device=op.device)
    # T_m is kept on the host in float64: its diagonal α and off-diagonal β are m ≤ m_max
    # numbers, and its eigen-decomposition each step is a small LAPACK call, not a device op
    alpha = np.zeros(m_max)
    beta = np.zeros(m_max)
    Q[0] = q
    history: list[float] = []
    eps = torch.finfo(op.dtype).eps
    breakdown_tol = 1e3 * eps
    scale = 0.0  # running estimate of ‖A‖ for the breakdown test
    theta = np.zeros(0)
    S = np.zeros((0, 0))
    m = 0
    converged = False
    invariant = False
    for j in range(m_max):
        w = _check_result_vector(op.matvec(Q[j]), op).clone()
        m = j + 1
        alpha[j] = float(Q[j] @ w)
        # full reorthogonalisation, twice ("twice is enough", Parlett): w ← w − Q_m (Q_mᵀ w)
        basis = Q[:m]
        w.addmv_(basis.T, basis @ w, alpha=-1)
        w.addmv_(basis.T, basis @ w, alpha=-1)
        b = float(torch.linalg.vector_norm(w))
        beta[j] = b
        theta, S = _ritz_pairs(alpha[:m], beta[: m - 1])
        history.append(float(theta[0]))
        scale = max(scale, float(np.abs(theta).max()))
        kk = min(k, m)
        res = np.abs(b * S[m - 1, :kk]) + m * eps * scale
        # breakdown: the Krylov space is invariant to working precision, the Ritz values are
        # eigenvalues; the (tiny) residual |β_m s_m| plus the rounding allowance is the bound
        invariant = b <= breakdown_tol * max(scale, 1e-300)
        if m >= k and m >= min_iter:
            ok = bool((res <= tol * np.abs(theta[:kk])).all())
            if ok or invariant:
                converged = ok
                break
        if invariant or m == m_max:
            break
        torch.div(w, b, out=Q[m])

    kk = min(k, m)
    values = torch.from_numpy(theta[:kk])
    residuals = torch.from_numpy(np.abs(beta[m - 1] * S[m - 1, :kk]) + m * eps * scale)
    coeffs = torch.from_numpy(S[:, :kk].copy()).to(dtype=op.dtype, device=op.device)
    vectors = Q[:m].T @ coeffs
    vectors = vectors / torch.linalg.vector_norm(vectors, dim=0, keepdim=True)
    converged = converged or bool(
        (residuals <= tol * values.abs()).all() and kk == k and m >= min_iter)
    return EigenResult(value=float(values[0]), vector=vectors[:, 0], residual=float(residuals[0]),
                       n_matvecs=m, converged=converged, values=values, vectors=vectors,
                       residuals=residuals, history=history)


def gershgorin_bounds(matrix: torch.Tensor) -> tuple[float, float]:
    """An interval [lo, hi] containing every eigenvalue of a symmetric matrix.

    By Gershgorin's theorem every eigenvalue lies in a disc |λ − a_ii| ≤ R_i with
    R_i = Σ_{j≠i} |a_ij|; for a symmetric (real-spectrum) matrix this gives
    lo = min_i (a_ii − R_i) and hi = max_i (a_ii + R_i). The upper end is the cheap
    proxy for λmax used in Balboni §7.6. Costs O(n²), no products.
    """
    check_tensor(matrix, "matrix", ndim=2)
    n, m = matrix.shape
    if n != m or n == 0:
        raise ValueError(f"matrix must be square and non-empty, got shape {tuple(matrix.shape)}")
    scale = float(matrix.abs().max())
    tol = (1e-6 if matrix.dtype == torch.float32 else 1e-10) * max(scale, 1e-300)
    if float((matrix - matrix.T).abs().max()) > tol:
        raise ValueError("matrix must be symmetric (A = Aᵀ) for real Gershgorin bounds")
    diag = torch.diagonal(matrix)
    radius = matrix.abs().sum(dim=1) - diag.abs()
    return float((diag - radius).min()), float((diag + radius).max())

