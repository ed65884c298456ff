"""Objectives whose landscapes are known: strict saddles, PCA and matrix completion (Ma §8.1–8.3).

Notation follows Ma, lecture notes ch. 8: a symmetric ``M`` of shape ``(d, d)``,
a point ``x`` of shape ``(d,)`` (or a batch ``(B, d)``), a direction ``v``.

Strict saddles (Ma §8.2)
    * :func:`strict_saddle_report` — which of the three cases of Ma Def. 8.4 each point meets:
      ‖∇f(x)‖₂ ≥ α, λ_min(∇²f(x)) ≤ −β, or ‖x − x⋆‖₂ ≤ γ for a local minimum x⋆.
    * :func:`perturbed_gradient_descent` — gradient descent that adds a random kick from a ball
      whenever the gradient is small (the escape mechanism of Jin et al. 2017 behind the corrected
      Ma Thm. 8.5; plain gradient descent, which Ma lists, has no polynomial-time guarantee).

PCA (Ma §8.3.1, eqs 8.1–8.10)
    * g(x) = ½‖M − xxᵀ‖²_F (eq. 8.1): :func:`pca_loss`; ∇g(x) = −2(M − xxᵀ)x: :func:`pca_gradient`
      (Ma prints −(M − xxᵀ)x; the factor 2 is an erratum, see the PCA chapter);
      ⟨v, ∇²g(x) v⟩ = 2‖x‖²‖v‖² + 4⟨x, v⟩² − 2vᵀMv (twice eq. 8.8):
      :func:`pca_hessian_quadratic_form`; the dense Hessian :func:`pca_hessian`;
      the stationary points 0 and ±√λᵢ vᵢ (eq. 8.2): :func:`pca_stationary_points`.

Matrix completion (Ma §8.3.2, eqs 8.11–8.18)
    * :class:`MatrixCompletion` — f(x) = ½‖P_Ω(M − xxᵀ)‖²_F (eqs 8.11–8.12), its gradient and
      Hessian quadratic form (eq. 8.17), in O(#Ω) work per call (#Ω the number of observed entries): the observed entries are kept
      in index (CSR) form and no d × d product is ever formed.
    * :func:`sample_mask` — symmetric Bernoulli(p) masks Ω (Ma Def. 8.10);
      :func:`project_observed` — P_Ω (Ma Def. 8.9).
    * :func:`incoherent_vector`, :func:`incoherent_ground_truth`, :func:`incoherence` —
      ground truth z with ‖z‖₂ = 1 and ‖z‖_∞ ≤ μ/√d (Ma Def. 8.12).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .device import make_generator
from .validation import (
    check_callable,
    check_choice,
    check_int,
    check_positive,
    check_probability,
    check_same_device,
    check_same_dtype,
    check_tensor,
)

__all__ = [
    "pca_loss",
    "pca_gradient",
    "pca_hessian",
    "pca_hessian_quadratic_form",
    "PCAStationaryPoints",
    "pca_stationary_points",
    "project_observed",
    "sample_mask",
    "incoherence",
    "incoherent_vector",
    "incoherent_ground_truth",
    "MatrixCompletion",
    "StrictSaddleReport",
    "strict_saddle_report",
    "PerturbedGDResult",
    "perturbed_gradient_descent",
]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _generator(seed: int | torch.Generator, name: str = "seed") -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return make_generator(check_int(seed, name, minimum=0))


def _symmetry_tolerance(M: torch.Tensor) -> float:
    scale = float(M.abs().max()) if M.numel() else 0.0
    return 100.0 * torch.finfo(M.dtype).eps * max(scale, 1.0)


def _check_symmetric_matrix(M: object, name: str, *, batch: bool = False) -> torch.Tensor:
    check_tensor(M, name, ndim=(2, 3) if batch else 2)
    assert isinstance(M, torch.Tensor)
    if M.shape[-1] != M.shape[-2]:
        raise ValueError(f"{name} must be square, got shape {tuple(M.shape)}")
    if M.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(M.shape)}")
    if float((M - M.transpose(-1, -2)).abs().max()) > _symmetry_tolerance(M):
        raise ValueError(f"{name} must be symmetric (M == M.T), got a non-symmetric matrix")
    return M


def _check_point(x: object, name: str, d: int, like: torch.Tensor) -> torch.Tensor:
    check_tensor(x, name, ndim=(1, 2))
    assert isinstance(x, torch.Tensor)
    if x.shape[-1] != d:
        raise ValueError(f"{name} must have last dimension {d}, got shape {tuple(x.shape)}")
    check_same_device(M=like, **{name: x})
    check_same_dtype(M=like, **{name: x})
    return x


# ---------------------------------------------------------------------------------------------
# PCA (Ma §8.3.1)
# ---------------------------------------------------------------------------------------------


def pca_loss(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """g(x) = ½‖M − xxᵀ‖²_F (Ma eq. 8.1), for ``x`` of shape ``(d,)`` or a batch ``(B, d)``.

    Computed without forming xxᵀ: ‖M − xxᵀ‖²_F = ‖M‖²_F − 2xᵀMx + ‖x‖⁴.
    Returns a scalar, or shape ``(B,)`` for a batch.
    """
    _check_symmetric_matrix(M, "M")
    _check_point(x, "x", M.shape[0], M)
    Mx = x @ M  # M is symmetric, so this is (Mx)ᵀ row by row
    sq = (x * x).sum(-1)
    return 0.5 * ((M * M).sum() - 2.0 * (x * Mx).sum(-1) + sq * sq)


def pca_gradient(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """∇g(x) = −2(M − xxᵀ)x = 2‖x‖²x − 2Mx for g of Ma eq. 8.1.

    Ma (proof of Thm. 8.7) prints −(M − xxᵀ)x; the missing factor 2 does not change where the
    gradient vanishes (eq. 8.2: Mx = ‖x‖²x). Batched like :func:`pca_loss`.
    """
    _check_symmetric_matrix(M, "M")
    _check_point(x, "x", M.shape[0], M)
    sq = (x * x).sum(-1, keepdim=True)
    return 2.0 * sq * x - 2.0 * (x @ M)


def pca_hessian(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The dense Hessian ∇²g(x) = 2‖x‖² I + 4xxᵀ − 2M of g (Ma eq. 8.1); ``x`` of shape ``(d,)``."""
    _check_symmetric_matrix(M, "M")
    check_tensor(x, "x", shape=(M.shape[0],))
    check_same_device(M=M, x=x)
    check_same_dtype(M=M, x=x)
    eye = torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    return 2.0 * (x @ x) * eye + 4.0 * torch.outer(x, x) - 2.0 * M


def pca_hessian_quadratic_form(M: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """⟨v, ∇²g(x) v⟩ = 2‖x‖²‖v‖² + 4⟨x, v⟩² − 2vᵀMv (twice the right side of Ma eq. 8.8).

    ``x`` and ``v`` have the same shape, ``(d,)`` or ``(B, d)`` (row-wise forms).
    """
    _check_symmetric_matrix(M, "M")
    _check_point(x, "x", M.shape[0], M)
    _check_point(v, "v", M.shape[0], M)
    if v.shape != x.shape:
        raise ValueError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
    xv = (x * v).sum(-1)
    return (
        2.0 * (x * x).sum(-1) * (v * v).sum(-1)
        + 4.0 * xv * xv
        - 2.0 * (v * (v @ M)).sum(-1)
    )


@dataclass(frozen=True)
class PCAStationaryPoints:
    """The stationary points of g(x) = ½‖M − xxᵀ‖²_F (Ma eq. 8.2).

    ``points[k]`` is 0 (k = 0) or ±√λᵢ vᵢ; ``eigenvalue[k]`` is ‖points[k]‖² (the eigenvalue
    λᵢ it belongs to, 0 for the origin); ``index[k]`` is i (eigenvalues sorted decreasingly,
    −1 for the origin); ``is_global_min[k]`` marks the points with λᵢ = λ₁.
    """

    points: torch.Tensor
    eigenvalue: torch.Tensor
    index: torch.Tensor
    is_global_min: torch.Tensor
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor


def pca_stationary_points(M: torch.Tensor, *, tol: float | None = None) -> PCAStationaryPoints:
    """All stationary points of g(x) = ½‖M − xxᵀ‖²_F: x = 0 and x = ±√λᵢ vᵢ for λᵢ > 0 (Ma eq. 8.2).

    ∇g(x) = 0 ⇔ Mx = ‖x‖²x, so x is 0 or an eigenvector whose eigenvalue equals ‖x‖².
    When an eigenvalue λ > 0 is repeated the stationary points with ‖x‖² = λ form a whole
    sphere in its eigenspace; the eigenvectors returned by ``eigh`` stand for it.
    Eigenvalues ≤ ``tol`` (default: d·eps·max abs λ) count as zero and give no points.
    ``is_global_min`` uses the same tolerance to decide λᵢ = λ₁.
    """
    _check_symmetric_matrix(M, "M")
    lam, vecs = torch.linalg.eigh(M)
    order = torch.argsort(lam, descending=True)
    lam, vecs = lam[order], vecs[:, order]
    if tol is None:
        tol = M.shape[0] * torch.finfo(M.dtype).eps * max(float(lam.abs().max()), 1.0)
    else:
        tol = check_positive(tol, "tol", strict=False)
    keep = torch.nonzero(lam > tol).flatten()
    d = M.shape[0]
    pts = [torch.zeros(d, dtype=M.dtype, device=M.device)]
    eig = [torch.zeros((), dtype=M.dtype, device=M.device)]
    idx = [-1]
    for i in keep.tolist():
        root = torch.sqrt(lam[i])
        for sign in (1.0, -1.0):
            pts.append(sign * root * vecs[:, i])
            eig.append(lam[i])
            idx.append(i)
    eigenvalue = torch.stack(eig)
    top = float(lam[0])
    is_min = (eigenvalue >= top - tol) & (eigenvalue > tol)
    if top <= tol:  # M ⪯ 0: the origin is the global minimum
        is_min = torch.zeros_like(is_min)
        is_min[0] = True
    return PCAStationaryPoints(
        points=torch.stack(pts),
        eigenvalue=eigenvalue,
        index=torch.tensor(idx, device=M.device),
        is_global_min=is_min,
        eigenvalues=lam,
        eigenvectors=vecs,
    )


# ---------------------------------------------------------------------------------------------
# Matrix completion (Ma §8.3.2)
# ---------------------------------------------------------------------------------------------


def _check_mask(mask: object, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool, got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have the shape of M {tuple(shape)}, got {tuple(mask.shape)}")
    if bool((mask != mask.transpose(-1, -2)).any()):
        raise ValueError(f"{name} must be symmetric: (i, j) observed exactly when (j, i) is")
    return mask


def project_observed(A: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """P_Ω(A): ``A`` with every entry outside Ω set to zero (Ma Def. 8.9). Dense, for small d."""
    check_tensor(A, "A", ndim=(2, 3))
    _check_mask(mask, "mask", tuple(A.shape))
    check_same_device(A=A, mask=mask)
    return torch.where(mask, A, torch.zeros((), dtype=A.dtype, device=A.device))


def sample_mask(
    d: int,
    p: float,
    seed: int | torch.Generator,
    *,
    batch: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A symmetric Bernoulli(p) mask Ω ⊆ [d] × [d] (Ma Def. 8.10), as a bool tensor.

    Each unordered pair {i, j} (i ≤ j, the diagonal included) is observed independently with
    probability ``p``, and (i, j) ∈ Ω exactly when (j, i) ∈ Ω, so that P_Ω(A) is symmetric for
    symmetric A. Shape ``(d, d)``, or ``(batch, d, d)`` with an independent mask per problem.
    The uniforms are drawn on the CPU from ``seed`` (an int or a ``torch.Generator``), so a
    seed gives the same mask on every device.
    """
    d = check_int(d, "d", minimum=1)
    p = check_probability(p, "p")
    gen = _generator(seed)
    shape = (d, d) if batch is None else (check_int(batch, "batch", minimum=1), d, d)
    u = torch.rand(shape, generator=gen)
    upper = torch.triu(u < p)
    mask = upper | upper.transpose(-1, -2)
    return mask if device is None else mask.to(device)


def incoherence(z: torch.Tensor) -> torch.Tensor:
    """μ(z) = √d ‖z‖_∞ / ‖z‖₂, the smallest μ with ‖z/‖z‖‖_∞ ≤ μ/√d (Ma Def. 8.12).

    μ lies in [1, √d]: 1 for a flat vector (±1/√d entries), √d for a basis vector.
    ``z`` of shape ``(d,)`` or ``(B, d)`` (row-wise).
    """
    check_tensor(z, "z", ndim=(1, 2))
    norm = z.norm(dim=-1)
    if bool((norm == 0).any()):
        raise ValueError("z must be nonzero")
    return math.sqrt(z.shape[-1]) * z.abs().amax(-1) / norm


def incoherent_vector(
    d: int,
    seed: int | torch.Generator,
    *,
    kind: str = "gaussian",
    mu: float | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    max_tries: int = 100,
) -> torch.Tensor:
    """A unit ground truth z ∈ ℝᵈ that is incoherent: ‖z‖_∞ ≤ μ/√d (Ma Def. 8.12).

    ``kind="gaussian"``: z = g/‖g‖ with g standard normal, whose μ is about √(2 log d);
    ``kind="rademacher"``: entries ±1/√d, μ = 1 exactly. If ``mu`` is given, draws are
    repeated (at most ``max_tries``) until μ(z) ≤ mu, and a ``ValueError`` names ``mu`` when
    that fails.
    """
    d = check_int(d, "d", minimum=1)
    kind = check_choice(kind, "kind", ("gaussian", "rademacher"))
    if mu is not None:
        mu = check_positive(mu, "mu")
        if mu < 1.0:
            raise ValueError(f"mu must be >= 1 (no unit vector has mu < 1), got {mu}")
    max_tries = check_int(max_tries, "max_tries", minimum=1)
    gen = _generator(seed)
    for _ in range(max_tries):
        if kind == "gaussian":
            z = torch.randn(d, generator=gen, dtype=torch.float64)
        else:
            z = torch.randint(0, 2, (d,), generator=gen).to(torch.float64) * 2.0 - 1.0
        z = z / z.norm()
        if mu is None or float(incoherence(z)) <= mu:
            return z.to(dtype=dtype, device=device)
    raise ValueError(f"mu={mu} too small: no {kind} draw met it in {max_tries} tries")


def incoherent_ground_truth(
    d: int,
    seed: int | torch.Generator,
    *,
    kind: str = "gaussian",
    mu: float | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, M)`` with z from :func:`incoherent_vector` and M = zzᵀ (Ma §8.3.2)."""
    z = incoherent_vector(d, seed, kind=kind, mu=mu, dtype=dtype, device=device)
    return z, torch.outer(z, z)


class MatrixCompletion:
    """The rank-1 matrix completion objective f(x) = ½ Σ_{(i,j)∈Ω} (M_ij − x_i x_j)² (Ma eq. 8.11).

    ``M`` is symmetric, shape ``(d, d)`` — or ``(B, d, d)`` for a batch of B independent
    problems solved together — and ``mask`` a symmetric bool tensor of the same shape
    (:func:`sample_mask`). The constructor reads the observed entries once; afterwards every
    call costs O(#Ω), #Ω the number of observed entries: the observed entries are held as index arrays and as CSR matrices with
    the pattern of Ω (A = P_Ω(M) and the 0/1 pattern S), so no d × d product is formed.

    Only the observed entries of ``M`` are read: they must be finite and symmetric
    (M_ij = M_ji on Ω); the unobserved ones may hold anything, NaN included, since a
    completion problem does not know them.

    Gradients of problems with fewer than ``small_work`` observed entries times points use a
    gather/scatter-add path instead of the CSR products; both are O(#Ω).

    Points: for a single problem ``x`` is ``(d,)`` or ``(K, d)`` (K points on the same Ω);
    for a batch of B problems ``x`` is ``(B, d)``, row b belonging to problem b.
    """

    small_work: int = 65_536

    def __init__(self, M: torch.Tensor, mask: torch.Tensor) -> None:
        check_tensor(M, "M", ndim=(2, 3), finite=False)
        if M.shape[-1] != M.shape[-2]:
            raise ValueError(f"M must be square, got shape {tuple(M.shape)}")
        if M.shape[-1] == 0:
            raise ValueError(f"M must have at least one row, got shape {tuple(M.shape)}")
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must have dtype torch.bool, got {mask.dtype}")
        if tuple(mask.shape) != tuple(M.shape):
            raise ValueError(
                f"mask must have the shape of M {tuple(M.shape)}, got {tuple(mask.shape)}"
            )
        check_same_device(M=M, mask=mask)
        self.d = int(M.shape[-1])
        self.batch: int | None = int(M.shape[0]) if M.ndim == 3 else None
        self.dtype = M.dtype
        self.device = M.device
        nb = 1 if self.batch is None else self.batch
        n = nb * self.d
        idx = torch.nonzero(mask.reshape(n, self.d))  # row-major: sorted by row, then column
        rows = idx[:, 0]
        b = rows // self.d
        cols = b * self.d + idx[:, 1]
        # Only the observed entries matter (the others are unknown in a completion problem),
        # so symmetry and finiteness are checked there, in O(|Ω| log |Ω|).
        key = rows * n + cols
        key_t = cols * n + rows
        if not torch.equal(key, torch.sort(key_t).values):
            raise ValueError("mask must be symmetric: (i, j) observed exactly when (j, i) is")
        self.values = M.reshape(n, self.d)[rows, idx[:, 1]]
        if not bool(torch.isfinite(self.values).all()):
            raise ValueError("M must contain only finite values on the observed entries")
        order_t = torch.argsort(key_t)  # position of (j, i) for each observed (i, j)
        vt = torch.empty_like(self.values)
        vt[order_t] = self.values
        if self.values.numel() and float((self.values - vt).abs().max()) > _symmetry_tolerance(
            self.values
        ):
            raise ValueError("M must be symmetric (M == M.T) on the observed entries")
        self.n_observed = int(rows.numel())
        counts = torch.bincount(rows, minlength=n)
        crow = torch.zeros(n + 1, dtype=torch.long, device=M.device)
        crow[1:] = torch.cumsum(counts, 0)
        index_dtype = torch.int32 if max(n, self.n_observed) < 2**31 - 1 else torch.int64
        self.rows, self.cols = rows, cols  # flat indices into the stacked (B·d) vector
        self._crow = crow.to(index_dtype)
        self._col = cols.to(index_dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's "sparse CSR is beta" notice
            self._A = torch.sparse_csr_tensor(self._crow, self._col, self.values, (n, n))
            self._S = torch.sparse_csr_tensor(
                self._crow, self._col, torch.ones_like(self.values), (n, n)
            )
        self.observed_per_problem = torch.bincount(b, minlength=nb)

    # -- points -------------------------------------------------------------------------------
    def _flat(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Points as a ``(n, K)`` matrix of columns, n = B·d, for the CSR products."""
        check_tensor(x, name, ndim=(1, 2))
        if x.shape[-1] != self.d:
            raise ValueError(f"{name} must have last dimension {self.d}, got shape {tuple(x.shape)}")
        if x.dtype != self.dtype:
            raise TypeError(f"{name} must have dtype {self.dtype} (the dtype of M), got {x.dtype}")
        if x.device != self.device:
            raise ValueError(f"{name} must be on {self.device} (the device of M), got {x.device}")
        if self.batch is not None:
            if tuple(x.shape) != (self.batch, self.d):
                raise ValueError(
                    f"{name} must have shape ({self.batch}, {self.d}) for a batch of "
                    f"{self.batch} problems, got {tuple(x.shape)}"
                )
            return x.reshape(-1, 1)
        return x.reshape(-1, 1) if x.ndim == 1 else x.T

    def _unflat(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.batch is not None or like.ndim == 1 or y.ndim == 1:
            return y.reshape(like.shape)
        return y.T

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        """r_ij = M_ij − x_i x_j on the observed entries, shape ``(#Ω,)`` or ``(K, #Ω)``."""
        X = self._flat(x, "x")  # (n, K)
        r = self.values[:, None] - X[self.rows] * X[self.cols]  # (|Ω|, K)
        return r[:, 0] if (self.batch is not None or x.ndim == 1) else r.T

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = ½‖P_Ω(M − xxᵀ)‖²_F (Ma eq. 8.12). Scalar, ``(K,)`` or ``(B,)``."""
        r = self.residuals(x)
        if self.batch is None:
            return 0.5 * (r * r).sum(-1)
        b = self.rows // self.d
        out = torch.zeros(self.batch, dtype=self.dtype, device=self.device)
        return 0.5 * out.index_add_(0, b, r * r)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """∇f(x) = −2 P_Ω(M − xxᵀ) x = −2 (P_Ω(M) x − x ⊙ P_Ω(𝟙𝟙ᵀ)(x ⊙ x)).

        Two sparse products over the #Ω observed entries (Ω symmetric). Ma eq. 8.16 writes
        ⟨v, ∇f(x)⟩ = ⟨v, P_Ω(M − xxᵀ)x⟩, which lacks the factor −2 (an erratum noted in the
        matrix-completion chapter).
        """
        X = self._flat(x, "x")
        if self.n_observed * X.shape[1] < self.small_work:
            # Small problems: gather and scatter-add in torch's own kernels, which run on one
            # thread at this size (a threaded sparse product costs more than it saves there).
            Xc = X[self.cols]
            r = self.values[:, None] - X[self.rows] * Xc
            g = torch.zeros_like(X).index_add_(0, self.rows, r * Xc).mul_(-2.0)
            return self._unflat(g, x)
        if X.shape[1] == 1:
            X = X[:, 0]  # a sparse matrix-vector product is faster than a one-column product
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = -2.0 * (self._A @ X - X * (self._S @ (X * X)))
        return self._unflat(g, x)

    def hessian_quadratic_form(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """⟨v, ∇²f(x) v⟩ = ‖P_Ω(vxᵀ + xvᵀ)‖²_F − 2⟨P_Ω(M − xxᵀ), vvᵀ⟩ (Ma eq. 8.17).

        ``v`` has the shape of ``x``; one value per point.
        """
        X = self._flat(x, "x")
        if not isinstance(v, torch.Tensor) or v.shape != x.shape:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"v must have the shape of x {tuple(x.shape)}, got {shape}")
        V = self._flat(v, "v")
        xi, xj, vi, vj = X[self.rows], X[self.cols], V[self.rows], V[self.cols]
        r = self.values[:, None] - xi * xj
        terms = (vi * xj + xi * vj) ** 2 - 2.0 * r * vi * vj  # (|Ω|, K)
        if self.batch is None:
            out = terms.sum(0)
            return out[0] if x.ndim == 1 else out
        b = self.rows // self.d
        res = torch.zeros(self.batch, dtype=self.dtype, device=self.device)
        return res.index_add_(0, b, terms[:, 0])

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        """Dense ∇²f(x) = 4 P_Ω(xxᵀ) + 2 diag(P_Ω(𝟙𝟙ᵀ)(x ⊙ x)) − 2 P_Ω(M), shape ``(d, d)``.

        O(d² + #Ω) memory: for checking small problems only (single problem, ``x`` of shape
        ``(d,)``). Its quadratic form is Ma eq. 8.17.
        """
        if self.batch is not None:
            raise ValueError("hessian is for a single problem; this MatrixCompletion holds a batch")
        check_tensor(x, "x", shape=(self.d,))
        self._flat(x, "x")
        H = torch.zeros(self.d, self.d, dtype=self.dtype, device=self.device)
        xi, xj = x[self.rows], x[self.cols]
        H[self.rows, self.cols] = 4.0 * xi * xj - 2.0 * self.values
        diag = torch.zeros(self.d, dtype=self.dtype, device=self.device)
        diag.index_add_(0, self.rows, xj * xj)
        return H + torch.diag(2.0 * diag)


# ---------------------------------------------------------------------------------------------
# Strict saddles (Ma §8.2)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrictSaddleReport:
    """Per-point diagnosis of Ma Def. 8.4 for an (α, β, γ) triple.

    ``case1``: ‖∇f(x)‖₂ ≥ α; ``case2``: λ_min(∇²f(x)) ≤ −β; ``case3``: ‖x − x⋆‖₂ ≤ γ for one of
    the given local minima. ``case`` is the first case a point meets (1, 2 or 3) or 0 for
    none; ``satisfied`` is True when every point meets at least one case.
    """

    grad_norm: torch.Tensor
    lambda_min: torch.Tensor
    distance: torch.Tensor
    case1: torch.Tensor
    case2: torch.Tensor
    case3: torch.Tensor
    case: torch.Tensor
    alpha: float
    beta: float
    gamma: float

    @property
    def satisfied(self) -> bool:
        return bool((self.case > 0).all())

    @property
    def n_violations(self) -> int:
        return int((self.case == 0).sum())

    def counts(self) -> dict[int, int]:
        """How many points fall in each first case (0 = none)."""
        return {k: int((self.case == k).sum()) for k in (0, 1, 2, 3)}


def strict_saddle_report(
    f: Callable[[torch.Tensor], torch.Tensor],
    points: torch.Tensor,
    alpha: float,
    beta: float,
    gamma: float,
    *,
    minima: torch.Tensor,
) -> StrictSaddleReport:
    """Check the three cases of the (α, β, γ)-strict-saddle condition (Ma Def. 8.4) at ``points``.

    ``f`` maps a point of shape ``(d,)`` to a scalar tensor. It is evaluated under
    ``torch.func.vmap`` when it can be (plain torch arithmetic can), else point by point. ``points`` has shape ``(N, d)``;
    ``minima`` (shape ``(K, d)``, K ≥ 0) lists the local minima of f — they are not searched
    for, since no finite test can certify one (Ma Thm. 8.3). Gradients and Hessians come from
    ``torch.func`` (exact automatic differentiation).
    """
    check_callable(f, "f")
    check_tensor(points, "points", ndim=2)
    d = points.shape[1]
    check_tensor(minima, "minima", shape=(None, d))
    check_same_device(points=points, minima=minima)
    check_same_dtype(points=points, minima=minima)
    alpha = check_positive(alpha, "alpha")
    beta = check_positive(beta, "beta")
    gamma = check_positive(gamma, "gamma")
    try:
        grads = torch.func.vmap(torch.func.grad(f))(points)
        hess = torch.func.vmap(torch.func.hessian(f))(points)
    except RuntimeError:  # f has data-dependent control flow (e.g. validation): one at a time
        grads = torch.stack([torch.func.grad(f)(x) for x in points])
        hess = torch.stack([torch.func.hessian(f)(x) for x in points])
    hess = 0.5 * (hess + hess.transpose(-1, -2))
    grad_norm = grads.norm(dim=-1)
    lambda_min = torch.linalg.eigvalsh(hess)[:, 0]
    if minima.shape[0] == 0:
        distance = torch.full_like(grad_norm, math.inf)
    else:
        distance = torch.cdist(points, minima).min(dim=1).values
    c1 = grad_norm >= alpha
    c2 = lambda_min <= -beta
    c3 = distance <= gamma
    case = torch.where(c1, 1, torch.where(c2, 2, torch.where(c3, 3, 0)))
    return StrictSaddleReport(grad_norm, lambda_min, distance, c1, c2, c3, case,
                              alpha, beta, gamma)


@dataclass(frozen=True)
class PerturbedGDResult:
    """Iterates of :func:`perturbed_gradient_descent`.

    ``iterates`` has shape ``(steps + 1, *x0.shape)``; ``perturbed`` (shape
    ``(steps, *batch)``) marks the steps where a kick was added; ``n_perturbations`` counts
    them per run; ``stopped_at`` is the step at which a run left the ball ‖x‖ ≤ ``max_norm``
    and was frozen (−1 when it never did).
    """

    iterates: torch.Tensor
    perturbed: torch.Tensor
    n_perturbations: torch.Tensor
    stopped_at: torch.Tensor


def perturbed_gradient_descent(
    grad: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    lr: float,
    steps: int,
    *,
    radius: float | torch.Tensor,
    grad_threshold: float,
    wait: int,
    seed: int | torch.Generator,
    max_norm: float | None = None,
) -> PerturbedGDResult:
    """Gradient descent x ← x − η∇f(x) with random kicks near stationary points.

    Before step t, a run whose gradient norm is ≤ ``grad_threshold`` and that was last kicked
    at least ``wait`` steps ago gets x ← x + ξ, ξ uniform in the ball of radius ``radius``
    (the perturbation of Jin et al. 2017, which escapes strict saddles in polynomial time; Ma
    Thm. 8.5 names plain gradient descent, which does not, see the erratum in the strict-saddles
    chapter). ``radius=0`` is plain GD.
    There is no stopping rule: near a local minimum the runs keep being kicked and stay within
    about ``radius`` of it.

    ``x0`` is ``(d,)`` or a batch ``(B, d)`` of independent runs; ``grad`` maps a tensor of that
    shape to its gradient (row-wise). ``radius`` may be a tensor of shape ``(B,)``, one radius
    per run. With ``max_norm``, a run whose iterate leaves the ball
    of that radius is frozen from then on (to follow runs that escape to infinity); without
    it a non-finite iterate raises ``FloatingPointError``.
    """
    check_callable(grad, "grad")
    check_tensor(x0, "x0", ndim=(1, 2))
    lr = check_positive(lr, "lr")
    steps = check_int(steps, "steps", minimum=0)
    n_runs = x0.shape[0] if x0.ndim == 2 else 1
    if isinstance(radius, torch.Tensor):
        check_tensor(radius, "radius", shape=(n_runs,))
        if bool((radius < 0).any()):
            raise ValueError("radius must be >= 0")
        radii = radius.to(dtype=torch.float64, device="cpu")
    else:
        radii = torch.full((n_runs,), check_positive(radius, "radius", strict=False),
                           dtype=torch.float64)
    any_kick = bool((radii > 0).any())
    kickable = (radii > 0).to(x0.device)
    grad_threshold = check_positive(grad_threshold, "grad_threshold", strict=False)
    wait = check_int(wait, "wait", minimum=0)
    if max_norm is not None:
        max_norm = check_positive(max_norm, "max_norm")
    gen = _generator(seed)
    batched = x0.ndim == 2
    X = x0 if batched else x0[None]
    B, d = X.shape
    out = torch.empty((steps + 1, B, d), dtype=x0.dtype, device=x0.device)
    out[0] = X
    kicked = torch.zeros((steps, B), dtype=torch.bool, device=x0.device)
    last = torch.full((B,), -(wait + 1), dtype=torch.long, device=x0.device)
    stopped = torch.full((B,), -1, dtype=torch.long, device=x0.device)
    active = torch.ones(B, dtype=torch.bool, device=x0.device)
    for t in range(steps):
        G = grad(X if batched else X[0])
        G = G if batched else G[None]
        if any_kick:
            small = (G.norm(dim=-1) <= grad_threshold) & (t - last >= wait) & active & kickable
            if bool(small.any()):
                direction = torch.randn(B, d, generator=gen, dtype=torch.float64)
                direction = direction / direction.norm(dim=-1, keepdim=True)
                u = torch.rand(B, 1, generator=gen, dtype=torch.float64)
                r = radii[:, None] * u ** (1.0 / d)
                xi = (direction * r).to(dtype=x0.dtype, device=x0.device)
                X = torch.where(small[:, None], X + xi, X)
                last = torch.where(small, t, last)
                kicked[t] = small
                G = grad(X if batched else X[0])
                G = G if batched else G[None]
        X_new = X - lr * G
        if max_norm is not None:
            leaving = active & ~(X_new.norm(dim=-1) <= max_norm)  # catches NaN too
            stopped = torch.where(leaving, t + 1, stopped)
            active = active & ~leaving
            X_new = torch.where(active[:, None], X_new, X)  # frozen runs keep their last point
        elif not bool(torch.isfinite(X_new).all()):
            raise FloatingPointError(f"perturbed gradient descent diverged at step {t + 1}")
        X = X_new
        out[t + 1] = X
    n_pert = kicked.sum(0)
    if not batched:
        return PerturbedGDResult(out[:, 0], kicked[:, 0], n_pert[0], stopped[0])
    return PerturbedGDResult(out, kicked, n_pert, stopped)
