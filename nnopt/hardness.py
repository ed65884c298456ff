"""Hardness of optimisation and of gradient-based learning (chapter 4).

Two kinds of hardness, each made concrete enough to compute with.

*Global minimisation is NP-hard* (Chiang §10.4, Theorem 10.3). A SUBSET-SUM instance
(a₀, …, a_{n−1}; t) with natural numbers aᵢ and t becomes the quartic loss

    L(w) = (Σᵢ wᵢ aᵢ − t)² + Σᵢ (wᵢ (1 − wᵢ))²,      w ∈ ℝⁿ,

whose minimum is 0 exactly when the instance is a yes-instance.

* :func:`subset_sum_loss` — the loss of Theorem 10.3 as a torch callable.
* :func:`subset_sum_brute_force` and :func:`subset_sum_dp` — exact solvers (enumeration of all
  2ⁿ subsets; dynamic programming over reachable sums) that serve as ground truth.
* :func:`no_instance_lower_bound` — the book's quantitative form of "L > 0 on no-instances":
  min L ≥ 1 / (1 + 4‖a‖²).

*Gradients carry exponentially little information about a large orthonormal class*
(Wu, part 1: Definition 4, eqs. 1–2, Theorems 3 and 5).

* :func:`hypercube`, :func:`parity`, :func:`parity_class`, :func:`gram_matrix`,
  :func:`is_orthonormal_class` and :func:`walsh_hadamard` — the parities
  f_v(x) = (−1)^{⟨v, x⟩} on {0, 1}^d, an orthonormal class of size 2^d (Wu eqs. 1–2).
* :func:`per_example_gradients`, :func:`gradient_variance` and
  :func:`parity_gradient_variance` — the spread E_f ‖∇R^f(θ) − E_f ∇R^f(θ)‖² of the
  square-loss risk gradient across a class, with the bound of Wu Theorem 5 (eq. 5).
* :class:`TwoLayerReLU`, :func:`hat`, :func:`parity_network` and
  :func:`halfspace_intersection_network` — exact two-layer ReLU networks: the parity as a
  triangle wave of hat functions (Wu, "Parity functions as two-layer neural nets"), and the
  network g of the proof of Wu Theorem 3 whose sign is an intersection of halfspaces.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .device import VERIFY_DTYPE
from .validation import check_int, check_same_device, check_same_dtype, check_tensor

__all__ = [
    "SubsetSumResult",
    "subset_sum_loss",
    "subset_sum_brute_force",
    "subset_sum_dp",
    "no_instance_lower_bound",
    "hypercube",
    "parity",
    "parity_class",
    "gram_matrix",
    "is_orthonormal_class",
    "walsh_hadamard",
    "GradientVariance",
    "per_example_gradients",
    "gradient_variance",
    "parity_gradient_variance",
    "TwoLayerReLU",
    "hat",
    "parity_network",
    "halfspace_intersection_network",
]

# Enumerating 2**n subsets beyond this is refused: 2**26 int64 sums are already 512 MiB.
_MAX_BRUTE_FORCE_N = 26


# ---------------------------------------------------------------------------------------------
# SUBSET-SUM and the loss of Theorem 10.3
# ---------------------------------------------------------------------------------------------


def _check_natural(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a natural number (an int >= 0), got {type(value).__name__}")
    if int(value) < 0:
        raise ValueError(f"{name} must be a natural number (>= 0), got {value}")
    return int(value)


def _check_weights(a: object, name: str = "a") -> tuple[int, ...]:
    """Natural numbers a₀, …, a_{n−1} given as a sequence of ints or an integer tensor."""
    if isinstance(a, torch.Tensor):
        if a.is_floating_point() or a.is_complex() or a.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers (natural numbers), got dtype {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-dimensional, got shape {tuple(a.shape)}")
        values = [int(v) for v in a.tolist()]
    elif isinstance(a, np.ndarray):
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} must hold integers (natural numbers), got dtype {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-dimensional, got shape {a.shape}")
        values = [int(v) for v in a.tolist()]
    elif isinstance(a, Sequence) and not isinstance(a, str):
        values = [_check_natural(v, f"{name}[{i}]") for i, v in enumerate(a)]
    else:
        raise TypeError(f"{name} must be a sequence of natural numbers, got {type(a).__name__}")
    if len(values) == 0:
        raise ValueError(f"{name} must contain at least one number")
    for i, v in enumerate(values):
        if v < 0:
            raise ValueError(f"{name}[{i}] must be a natural number (>= 0), got {v}")
    return tuple(values)


def subset_sum_loss(a: object, t: object) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss of the SUBSET-SUM reduction (Chiang Theorem 10.3, §10.4).

    For natural numbers ``a`` = (a₀, …, a_{n−1}) and target ``t`` returns the callable

        L(w) = (Σᵢ wᵢ aᵢ − t)² + Σᵢ (wᵢ (1 − wᵢ))²,

    defined on ℝⁿ (the source writes the sums over i ∈ [d]; the index set is [n]). ``w``
    is a floating tensor of shape ``(..., n)``; leading dimensions are a batch, so many
    points (or many gradient-descent runs) are evaluated at once. L is differentiable, so
    ``torch.autograd`` gives its gradient.
    """
    weights = _check_weights(a)
    target = _check_natural(t, "t")
    n = len(weights)

    def loss(w: torch.Tensor) -> torch.Tensor:
        check_tensor(w, "w", ndim=tuple(range(1, 9)))
        if w.shape[-1] != n:
            raise ValueError(f"w must have last dimension n = {n}, got shape {tuple(w.shape)}")
        av = torch.tensor(weights, dtype=w.dtype, device=w.device)
        misfit = w @ av - target
        return misfit**2 + ((w * (1 - w)) ** 2).sum(-1)

    loss.a = weights  # type: ignore[attr-defined]
    loss.t = target  # type: ignore[attr-defined]
    return loss


@dataclass(frozen=True)
class SubsetSumResult:
    """Answer of an exact SUBSET-SUM solver.

    ``feasible`` says whether some C ⊆ [n] has Σ_{i∈C} aᵢ = t; ``solutions`` holds indicator
    vectors 𝕀[i ∈ C] as rows of a ``(k, n)`` int64 tensor (all of them for brute force, one
    for dynamic programming, none for a no-instance); ``closest_gap`` = min_C |Σ_{i∈C} aᵢ − t|
    (0 exactly for yes-instances).
    """

    feasible: bool
    solutions: torch.Tensor
    closest_gap: int
    method: str

    @property
    def subset(self) -> tuple[int, ...] | None:
        """Indices of the first solution, or ``None`` for a no-instance."""
        if not self.feasible:
            return None
        return tuple(int(i) for i in torch.nonzero(self.solutions[0]).flatten())


def _all_subset_sums(weights: tuple[int, ...]) -> np.ndarray:
    """Sums of all 2ⁿ subsets; entry k is the sum over the bits of k (bit i ↔ element i)."""
    sums = np.zeros(1, dtype=np.int64)
    for v in weights:
        sums = np.concatenate([sums, sums + v])
    return sums


def subset_sum_brute_force(a: object, t: object) -> SubsetSumResult:
    """Decide SUBSET-SUM by enumerating all 2ⁿ subsets (ground truth for small n).

    Returns every indicator vector w ∈ {0, 1}ⁿ with Σᵢ wᵢ aᵢ = t (Chiang §10.4), in
    increasing order of the binary number w₀ + 2w₁ + … . Refuses n > 26.
    """
    weights = _check_weights(a)
    target = _check_natural(t, "t")
    n = len(weights)
    if n > _MAX_BRUTE_FORCE_N:
        raise ValueError(f"a has {n} numbers; brute force enumerates 2**n subsets and "
                         f"is limited to n <= {_MAX_BRUTE_FORCE_N} (use subset_sum_dp)")
    sums = _all_subset_sums(weights)
    hits = np.nonzero(sums == target)[0]
    bits = (hits[:, None] >> np.arange(n)[None, :]) & 1
    return SubsetSumResult(
        feasible=bool(hits.size),
        solutions=torch.from_numpy(bits.astype(np.int64)).reshape(-1, n),
        closest_gap=int(np.abs(sums - target).min()),
        method="brute force",
    )


def subset_sum_dp(a: object, t: object) -> SubsetSumResult:
    """Decide SUBSET-SUM by dynamic programming over reachable sums, O(n·t) bit operations.

    R₀ = {0}, R_{i+1} = Rᵢ ∪ (Rᵢ + aᵢ), each truncated to [0, t] and stored as a bitset
    (a Python integer); the instance is a yes-instance iff t ∈ Rₙ, and one solution is read
    off by walking back through the Rᵢ. ``closest_gap`` is exact too: the largest reachable
    sum ≤ t and the smallest reachable sum > t are both found (the latter from the untruncated
    sums, kept as a running minimum).
    """
    weights = _check_weights(a)
    target = _check_natural(t, "t")
    n = len(weights)
    mask = (1 << (target + 1)) - 1
    reach = [1]
    above = None  # smallest subset sum exceeding t
    for v in weights:
        prev = reach[-1]
        shifted = prev << v
        overflow = shifted >> (target + 1)  # sums of this shift that exceed t
        if overflow:
            low = (overflow & -overflow).bit_length() - 1 + target + 1
            above = low if above is None else min(above, low)
        reach.append((prev | shifted) & mask)
    final = reach[-1]
    feasible = bool((final >> target) & 1)
    below = final.bit_length() - 1  # largest reachable sum <= t
    gap = target - below
    if above is not None:
        gap = min(gap, above - target)
    if feasible:
        row = [0] * n
        s = target
        for i in range(n - 1, -1, -1):
            if not (reach[i] >> s) & 1:  # s not reachable without element i: take it
                row[i] = 1
                s -= weights[i]
        assert s == 0
        solutions = torch.tensor([row], dtype=torch.int64)
    else:
        solutions = torch.zeros((0, n), dtype=torch.int64)
    return SubsetSumResult(feasible, solutions, 0 if feasible else gap, "dynamic programming")


def no_instance_lower_bound(a: object) -> float:
    """Lower bound 1 / (1 + 4‖a‖²) on min L for a no-instance of Theorem 10.3's loss.

    Proof (chapter 4): round each wᵢ to the nearest rᵢ ∈ {0, 1}, δᵢ = |wᵢ − rᵢ| (at most ½ only
    for wᵢ ∈ [−½, 3/2]; wᵢ = 3 gives δᵢ = 2). Then (wᵢ(1 − wᵢ))² ≥ δᵢ²/4 for every real wᵢ: for
    wᵢ = δ ≤ ½ it is δ²(1 − δ)², for wᵢ = −δ with any δ ≥ 0 it is δ²(1 + δ)², and w ↦ 1 − w gives
    the other side of ½. Since Σ rᵢaᵢ − t is a nonzero integer,
    |Σ wᵢaᵢ − t| ≥ 1 − Σ aᵢδᵢ. With s = Σ aᵢδᵢ ≤ ‖a‖ ‖δ‖ this gives
    L ≥ (1 − s)₊² + s²/(4‖a‖²) ≥ 1/(1 + 4‖a‖²). A sharpening of Chiang's "L(w) > 0 for all w".
    """
    weights = _check_weights(a)
    norm2 = sum(v * v for v in weights)
    return 1.0 / (1.0 + 4.0 * norm2)


# ---------------------------------------------------------------------------------------------
# Parities on the hypercube, an orthonormal class (Wu Definition 4, eqs. 1–2)
# ---------------------------------------------------------------------------------------------


def hypercube(d: int, *, signed: bool = False, dtype: torch.dtype = VERIFY_DTYPE,
              device: torch.device | str | None = None) -> torch.Tensor:
    """All 2^d points of {0, 1}^d (or {−1, 1}^d with ``signed``) as a ``(2^d, d)`` tensor.

    Row k is the binary expansion of k, least significant bit first: x_i = bit i of k
    (signed: x_i = 1 − 2·bit). Refuses d > 24.
    """
    d = check_int(d, "d", minimum=1)
    if d > 24:
        raise ValueError(f"d must be <= 24 (2**d rows are materialised), got {d}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    k = torch.arange(2**d, device=device)
    bits = (k[:, None] >> torch.arange(d, device=device)[None, :]) & 1
    x = 1 - 2 * bits if signed else bits
    return x.to(dtype)


def _check_binary(x: torch.Tensor, name: str) -> None:
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{name} must have entries in {{0, 1}}")


def parity(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The parity f_v(x) = (−1)^{⟨v, x⟩} for v, x ∈ {0, 1}^d (Wu, "Parity functions").

    ``v`` has shape ``(d,)`` or ``(m, d)`` (m parities), ``x`` shape ``(N, d)``; returns
    shape ``(N,)`` or ``(m, N)`` with entries ±1, in the dtype of ``x``.
    """
    check_tensor(x, "x", ndim=2)
    check_tensor(v, "v", ndim=(1, 2), shape=None)
    if v.shape[-1] != x.shape[1]:
        raise ValueError(f"v must have last dimension d = {x.shape[1]}, got shape {tuple(v.shape)}")
    check_same_device(v=v, x=x)
    _check_binary(v, "v")
    _check_binary(x, "x")
    s = torch.remainder(v.to(x.dtype) @ x.T, 2)
    return 1 - 2 * s


def parity_class(d: int, *, dtype: torch.dtype = VERIFY_DTYPE,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """All 2^d parities evaluated on all of {0, 1}^d: F[v, x] = (−1)^{⟨v, x⟩} (Wu eq. 1).

    Rows and columns are indexed as in :func:`hypercube`; F is the Sylvester–Hadamard
    matrix, and F Fᵀ / 2^d = I is Wu eq. 2 (orthonormality under the uniform measure).
    """
    x = hypercube(d, dtype=dtype, device=device)
    return parity(x, x)


def gram_matrix(F: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Gram matrix G[i, j] = ⟨f_i, f_j⟩ = Σ_x ρ(x) f_i(x) f_j(x) (Wu, before Definition 4).

    ``F`` is ``(m, N)``: m functions on N points; ``weights`` the probabilities ρ(x)
    (default uniform, 1/N).
    """
    check_tensor(F, "F", ndim=2)
    n_points = F.shape[1]
    if weights is None:
        return F @ F.T / n_points
    check_tensor(weights, "weights", shape=(n_points,))
    check_same_device(F=F, weights=weights)
    check_same_dtype(F=F, weights=weights)
    if bool((weights < 0).any()) or abs(float(weights.sum()) - 1.0) > 1e-6:
        raise ValueError("weights must be a probability vector (entries >= 0 summing to 1)")
    return (F * weights) @ F.T


def is_orthonormal_class(F: torch.Tensor, weights: torch.Tensor | None = None, *,
                         atol: float = 1e-10) -> bool:
    """Whether ⟨f_i, f_j⟩ = δ_ij for all rows of ``F`` (Wu Definition 4), up to ``atol``."""
    G = gram_matrix(F, weights)
    eye = torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    return bool(torch.allclose(G, eye, rtol=0.0, atol=atol))


def walsh_hadamard(values: torch.Tensor) -> torch.Tensor:
    """Coefficients c_v = E_x[f_v(x) g(x)] of g on {0, 1}^d against every parity f_v.

    ``values`` is ``(2^d, ...)``: g evaluated on :func:`hypercube` order (extra dimensions are
    independent functions, e.g. the columns of a Jacobian). Returns the same shape, row v
    being ⟨f_v, g⟩ under the uniform measure — equal to ``parity_class(d) @ values / 2^d``,
    computed as a Kronecker product of small Hadamard blocks (2^d · 64·⌈d/6⌉ operations per
    column instead of the 4^d of the dense product).
    """
    check_tensor(values, "values", ndim=(1, 2))
    n = values.shape[0]
    d = n.bit_length() - 1
    if n < 2 or (1 << d) != n:
        raise ValueError(f"values must have 2**d rows (d >= 1), got {n}")
    rest = values.shape[1:]
    # H_{2^d} = H_{2^{d_1}} ⊗ … ⊗ H_{2^{d_r}} (Sylvester), so the transform is r dense
    # matrix products with small Hadamard blocks (d_j <= 6), one per group of index bits.
    groups = [6] * (d // 6) + ([d % 6] if d % 6 else [])
    out = values.reshape(*[2**g for g in groups], -1)
    for axis, g in enumerate(groups):
        block = parity_class(g, dtype=values.dtype, device=values.device)
        out = torch.tensordot(block, out, dims=([1], [axis])).movedim(0, axis)
    return out.reshape(n, *rest) / n


# ---------------------------------------------------------------------------------------------
# Gradient variance across an orthonormal class (Wu Theorem 5)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradientVariance:
    """Spread of the risk gradient across a class of targets (Wu Theorem 5, eq. 5).

    For R^f(θ) = E_x[(h(x; θ) − f(x))²] and g(θ) = E_f ∇R^f(θ) (f uniform over the class):

    * ``variance`` — E_f ‖∇R^f(θ) − g(θ)‖²;
    * ``grad_sq_norm`` — E_x ‖∇_θ h(x; θ)‖²;
    * ``class_size`` — |F|;
    * ``bound_as_printed`` — E_x‖∇_θ h‖² / |F|, the right side of Wu eq. 5;
    * ``bound`` — 4 E_x‖∇_θ h‖² / |F|, the bound that holds for this R^f, whose gradient is
      2 E_x[(h − f) ∇_θ h] (the source drops the factor 2; see the chapter's erratum).
    """

    variance: float
    grad_sq_norm: float
    class_size: int
    bound_as_printed: float
    bound: float


def per_example_gradients(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs h(x; θ) and the Jacobian ∇_θ h(x; θ) of a scalar-output model, per example.

    ``model`` maps ``(N, d)`` to ``(N,)`` or ``(N, 1)``. Returns ``(h, J)`` with h of shape
    ``(N,)`` and J of shape ``(N, p)``, p the number of parameters (in ``named_parameters``
    order). Uses ``torch.func``; the module's parameters are not modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_tensor(x, "x", ndim=2)
    params = {k: v.detach() for k, v in model.named_parameters()}
    if not params:
        raise ValueError("model must have parameters")
    check_same_device(x=x, params=next(iter(params.values())))

    def h_single(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, p, (xi[None, :],))
        if out.numel() != 1:
            raise ValueError(f"model must return one output per example, got shape {tuple(out.shape)}")
        return out.reshape(())

    jac = torch.func.vmap(torch.func.jacrev(h_single), in_dims=(None, 0))(params, x)
    J = torch.cat([jac[k].reshape(x.shape[0], -1) for k in params], dim=1)
    with torch.no_grad():
        h = torch.func.vmap(h_single, in_dims=(None, 0))(params, x)
    return h, J


def gradient_variance(h: torch.Tensor, J: torch.Tensor, targets: torch.Tensor,
                      weights: torch.Tensor | None = None) -> GradientVariance:
    """Exact E_f ‖∇R^f − g‖² over an explicit class of targets (Wu Theorem 5).

    ``h`` ``(N,)`` and ``J`` ``(N, p)`` are the model outputs and Jacobian on the N points
    (from :func:`per_example_gradients`); ``targets`` ``(m, N)`` are the m functions of the
    class on those points; ``weights`` the probabilities ρ(x) (default uniform). Computes
    ∇R^f = 2 Σ_x ρ(x)(h(x) − f(x)) J(x) for every f, then the mean squared deviation from
    their mean. The class is not checked for orthonormality (see :func:`is_orthonormal_class`).
    """
    check_tensor(h, "h", ndim=1)
    n = h.shape[0]
    check_tensor(J, "J", shape=(n, None))
    check_tensor(targets, "targets", shape=(None, n))
    check_same_device(h=h, J=J, targets=targets)
    check_same_dtype(h=h, J=J, targets=targets)
    if weights is None:
        weights = torch.full((n,), 1.0 / n, dtype=h.dtype, device=h.device)
    else:
        check_tensor(weights, "weights", shape=(n,))
        check_same_device(h=h, weights=weights)
        check_same_dtype(h=h, weights=weights)
        if bool((weights < 0).any()) or abs(float(weights.sum()) - 1.0) > 1e-6:
            raise ValueError("weights must be a probability vector (entries >= 0 summing to 1)")
    resid = (h[None, :] - targets) * weights[None, :]  # (m, N)
    grads = 2.0 * resid @ J  # (m, p)
    dev = grads - grads.mean(0, keepdim=True)
    variance = float((dev**2).sum(1).mean())
    gsq = float((weights * (J**2).sum(1)).sum())
    m = targets.shape[0]
    return GradientVariance(variance, gsq, m, gsq / m, 4.0 * gsq / m)


def parity_gradient_variance(model: nn.Module, d: int, *, chunk: int = 64,
                             dtype: torch.dtype = VERIFY_DTYPE) -> GradientVariance:
    """E_f ‖∇R^f − g‖² over all 2^d parities on {0, 1}^d, uniform x (Wu Theorem 5).

    Exact (no sampling): with c_v = E_x[f_v(x) ∇_θ h(x; θ)], ∇R^{f_v} = 2E_x[h ∇_θ h] − 2c_v, so
    the variance is 4 (mean_v ‖c_v‖² − ‖mean_v c_v‖²); all c_v come from the fast
    Walsh–Hadamard transform of the Jacobian (:func:`walsh_hadamard`), ``chunk`` parameter
    columns at a time to bound memory. ``model`` takes ``(N, d)`` inputs in {0, 1}; it is
    evaluated in ``dtype`` on a copy, so its own dtype and parameters are left alone.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    d = check_int(d, "d", minimum=1)
    chunk = check_int(chunk, "chunk", minimum=1)
    if d > 20:
        raise ValueError(f"d must be <= 20 (the 2**d x p Jacobian is materialised), got {d}")
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    net = copy.deepcopy(model).to(dtype)
    x = hypercube(d, dtype=dtype, device=device)
    _, J = per_example_gradients(net, x)
    n, p = J.shape
    sq = 0.0
    mean_sq = 0.0
    for start in range(0, p, chunk):
        c = walsh_hadamard(J[:, start:start + chunk])  # (2^d, chunk): row v is c_v
        sq += float((c**2).sum()) / n
        mean_sq += float((c.mean(0) ** 2).sum())
    variance = 4.0 * (sq - mean_sq)
    gsq = float((J**2).sum(1).mean())
    return GradientVariance(variance, gsq, n, gsq / n, 4.0 * gsq / n)


# ---------------------------------------------------------------------------------------------
# Exact two-layer ReLU constructions (Wu: parity as triangle wave; proof of Theorem 3)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwoLayerReLU:
    """The network x ↦ Σ_j a_j σ(w_jᵀ x + b_j) + c with σ = ReLU.

    ``W`` ``(m, d)``, ``b`` ``(m,)``, ``a`` ``(m,)``, ``c`` a float. :meth:`path_norm` is
    Σ_j |a_j| (‖w_j‖₁ + |b_j|) + |c|.
    """

    W: torch.Tensor
    b: torch.Tensor
    a: torch.Tensor
    c: float = 0.0

    def __post_init__(self) -> None:
        check_same_device(**{name: check_tensor(getattr(self, name), name, floating=False,
                                                finite=False) for name in ("W", "b", "a")})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ndim=2)
        if x.shape[1] != self.W.shape[1]:
            raise ValueError(f"x must have {self.W.shape[1]} columns, got shape {tuple(x.shape)}")
        check_same_device(x=x, W=self.W)
        x = x.to(self.W.dtype)
        return torch.relu(x @ self.W.T + self.b) @ self.a + self.c

    @property
    def width(self) -> int:
        return int(self.W.shape[0])

    def path_norm(self) -> float:
        """Σ_j |a_j| (‖w_j‖₁ + |b_j|) + |c| (the bias counted as a weight on a constant input)."""
        per = self.W.abs().sum(1) + self.b.abs()
        return float((self.a.abs() * per).sum()) + abs(float(self.c))


def hat(z: torch.Tensor) -> torch.Tensor:
    """σ_hat(z) = σ(2z + 1) − 2σ(2z) + σ(2z − 1): 1 at z = 0, 0 for |z| ≥ ½, linear between."""
    check_tensor(z, "z")
    return torch.relu(2 * z + 1) - 2 * torch.relu(2 * z) + torch.relu(2 * z - 1)


def parity_network(v: torch.Tensor) -> TwoLayerReLU:
    """Two-layer ReLU network equal to (−1)^{vᵀx} on {0, 1}^d (Wu, parity as two-layer net).

    Since s = vᵀx ∈ {0, …, d}, (−1)^s = Σ_{i=0}^{d} (−1)^i σ_hat(s − i), a triangle wave of
    hat functions; each hat is three ReLU neurons σ(2vᵀx − 2i + 1), σ(2vᵀx − 2i),
    σ(2vᵀx − 2i − 1) with output weights (−1)^i (1, −2, 1). Width 3(d + 1).
    """
    check_tensor(v, "v", ndim=1)
    _check_binary(v, "v")
    d = v.shape[0]
    dtype = v.dtype
    W, b, a = [], [], []
    for i in range(d + 1):
        sign = (-1.0) ** i
        for shift, weight in ((1.0, 1.0), (0.0, -2.0), (-1.0, 1.0)):
            W.append(2 * v)
            b.append(-2.0 * i + shift)
            a.append(sign * weight)
    return TwoLayerReLU(torch.stack(W), torch.tensor(b, dtype=dtype, device=v.device),
                        torch.tensor(a, dtype=dtype, device=v.device), 0.0)


def halfspace_intersection_network(W: object, b: object) -> TwoLayerReLU:
    """The network g of the proof of Wu Theorem 3 (after Livni et al. 2014).

    For k halfspaces with natural weights wᵢ ∈ ℕ^d and thresholds bᵢ ∈ ℕ let
    cᵢ(x) = wᵢᵀx − bᵢ − ½, so |cᵢ(x)| ≥ ½ on {−1, 1}^d and σ_step(cᵢ) = σ(2cᵢ) − σ(2cᵢ − 1).
    Returns

        g(x) = (1/2k) (Σᵢ [σ(2cᵢ(x)) − σ(2cᵢ(x) − 1)] − k + ⅓),

    whose sign is +1 exactly when every halfspace holds: sign g = h₁ ∧ … ∧ h_k on {−1, 1}^d.
    ``W`` is a ``(k, d)`` integer tensor or nested sequence of naturals, ``b`` ``(k,)``.
    """
    if isinstance(W, torch.Tensor):
        if W.is_floating_point() or W.dtype == torch.bool:
            raise TypeError(f"W must hold integers (natural numbers), got dtype {W.dtype}")
        if W.ndim != 2:
            raise ValueError(f"W must be 2-dimensional (k, d), got shape {tuple(W.shape)}")
        rows = [tuple(int(v) for v in r) for r in W.tolist()]
    elif isinstance(W, Sequence) and not isinstance(W, str):
        rows = [_check_weights(r, f"W[{i}]") for i, r in enumerate(W)]
    else:
        raise TypeError(f"W must be a (k, d) integer tensor or nested sequence, got {type(W).__name__}")
    if not rows:
        raise ValueError("W must contain at least one halfspace")
    for i, r in enumerate(rows):
        if any(v < 0 for v in r):
            raise ValueError(f"W[{i}] must hold natural numbers (>= 0)")
    if len({len(r) for r in rows}) != 1 or len(rows[0]) == 0:
        raise ValueError("W must be a (k, d) array with d >= 1 and rows of equal length")
    k = len(rows)
    thresholds = _check_weights(b, "b")
    if len(thresholds) != k:
        raise ValueError(f"b must have one threshold per halfspace ({k}), got {len(thresholds)}")
    Wt = torch.tensor(rows, dtype=VERIFY_DTYPE)
    bt = torch.tensor(thresholds, dtype=VERIFY_DTYPE)
    # σ(2cᵢ) = σ(2wᵢᵀx − 2bᵢ − 1) and σ(2cᵢ − 1) = σ(2wᵢᵀx − 2bᵢ − 2)
    Wn = torch.cat([2 * Wt, 2 * Wt])
    bn = torch.cat([-2 * bt - 1, -2 * bt - 2])
    an = torch.cat([torch.ones(k, dtype=VERIFY_DTYPE), -torch.ones(k, dtype=VERIFY_DTYPE)]) / (2 * k)
    return TwoLayerReLU(Wn, bn, an, (-k + 1.0 / 3.0) / (2 * k))
