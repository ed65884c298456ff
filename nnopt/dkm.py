"""Deep kernel methods as code: the kernels of neural layers and their rank tools (chapter 9).

Balboni ch. 5 and appendix A {balboni2025optimization}, after Bohn, Rieger and Griebel
{bohn2019representer}. A layer of a deep kernel machine (DKM) is a function
f(z) = Σ_ij α_ij K(w_i, z) e_j built from a kernel K, fixed basis points w_1, ..., w_p and
coefficients α. Every kernel here is *output-diagonal*: K(x, x') e_j = k_j(x, x') e_j, so a
kernel is described by the scalar values k_j(x, x') and its layer matrix is
H_{ij,kω} = δ_jω k_j(w_i, z_k) (Balboni §5.3, the matrix H^l).

* :func:`fc_kernel` — the fully-connected kernel of Def. 2, eq. 5.1: k(x, x') = σ(x)·σ(x').
* :func:`conv_kernel` — the convolutional kernel of Def. 3: k_αβγ(x, x') is the full 2-D
  convolution of σ(x) and σ(x') in channel γ, evaluated at output position (α, β).
* :func:`recurrent_features`, :func:`recurrent_kernel` — the parametric recurrent kernel of
  Def. 4 (a parametric kernel in the sense of Def. 1, with parameter u):
  Φ_u(z)_t = σ(z_t + u Φ_u(z)_{t-1}) and k_t(z, z') = Φ_u(z)_t · Φ_u(z')_t.
* :class:`KernelLayer`, :func:`dkm_outputs` — a DKM layer (values, layer matrix H, outputs
  X_kω = Σ_ij α_ij H_ij,kω, least-squares coefficients block by block) and the composition of
  layers.
* :func:`fc_independent_points`, :func:`recurrent_independent_points` — the points γ^i of
  Remark 1 / Lemma 9 and their recurrent lift of Lemma 15.
* :func:`points_matrix`, :func:`are_independent` — the matrix of Lemma 6, whose invertibility
  is independence of points (Def. 5).
* :func:`min_singular_ratio`, :func:`is_full_rank`, :func:`minor_sum_of_squares` — full
  column rank of a layer matrix and the function φ of the proof of Lemma 10 (Cauchy–Binet).
* :func:`last_layer_solution` — the minimum-norm least-squares V with V H = G: a stationary
  point in the last layer's coefficients (Lemma 4) and the end of the path of Theorem 3.
* :class:`DescendingPath`, :func:`descending_path` — the last-layer path of Theorem 3.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .validation import (check_callable, check_choice, check_int, check_positive, check_real,
                         check_same_device, check_same_dtype, check_tensor)

__all__ = [
    "fc_kernel", "conv_kernel", "recurrent_features", "recurrent_kernel", "KernelLayer",
    "dkm_outputs", "fc_independent_points", "recurrent_independent_points", "points_matrix",
    "are_independent", "min_singular_ratio", "is_full_rank", "minor_sum_of_squares",
    "last_layer_solution", "DescendingPath", "descending_path",
]

Activation = Callable[[torch.Tensor], torch.Tensor]
KINDS = ("fc", "conv", "recurrent")


def fc_kernel(x: torch.Tensor, x2: torch.Tensor, activation: Activation = torch.tanh) -> torch.Tensor:
    """The fully-connected kernel of Balboni Def. 2 (eq. 5.1), as the matrix of its scalar part.

    K(x, x') y = (Σ_i σ(x_i) σ(x'_i)) y, so K(x, x') = k(x, x') I with k(x, x') = σ(x)·σ(x').
    ``x`` is (n, s), ``x2`` is (m, s); returns the (n, m) matrix k(x_a, x2_b). Its feature map is
    x ↦ σ(x): a layer f(x) = Σ_ij α_ij k(w_i, x) e_j equals W σ(x) with W_j = Σ_i α_ij σ(w_i).
    """
    x = check_tensor(x, "x", ndim=2)
    x2 = check_tensor(x2, "x2", ndim=2)
    check_callable(activation, "activation")
    check_same_device(x=x, x2=x2)
    check_same_dtype(x=x, x2=x2)
    if x.shape[1] != x2.shape[1]:
        raise ValueError(f"x2 must have {x.shape[1]} columns like x, got shape {tuple(x2.shape)}")
    return activation(x) @ activation(x2).T


def conv_kernel(x: torch.Tensor, x2: torch.Tensor, activation: Activation = torch.tanh) -> torch.Tensor:
    """The convolutional kernel of Balboni Def. 3, as its output-diagonal values.

    For images of c channels and size w × h (stored channel first, shape (c, w, h)),
    K(x, x') e_αβγ = k_αβγ(x, x') e_αβγ with
    k_αβγ(x, x') = Σ_ij σ(x_ijγ) σ(x'_(α-i)(β-j)γ),
    a term being zero when an index falls outside the image; α = 0, ..., 2w-2 and
    β = 0, ..., 2h-2 (the source's range shifted to start at 0). ``x`` is (n, c, w, h), ``x2`` is
    (m, c, w, h); returns (n, m, c, 2w-1, 2h-1). A layer with coefficients shared over the
    positions of a channel is a depthwise full convolution of σ(x) with a w × h filter.
    """
    x = check_tensor(x, "x", ndim=4)
    x2 = check_tensor(x2, "x2", ndim=4)
    check_callable(activation, "activation")
    check_same_device(x=x, x2=x2)
    check_same_dtype(x=x, x2=x2)
    if x.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x2 must have images of shape {tuple(x.shape[1:])} like x, "
                         f"got {tuple(x2.shape[1:])}")
    n, c, w, h = x.shape
    m = x2.shape[0]
    fx, fx2 = activation(x), activation(x2)
    # conv2d correlates; flipping σ(x) turns it into the convolution of the definition
    weight = fx.flip(-1, -2).permute(1, 0, 2, 3).reshape(c * n, 1, w, h)
    out = F.conv2d(fx2, weight, padding=(w - 1, h - 1), groups=c)   # (m, c*n, 2w-1, 2h-1)
    return out.reshape(m, c, n, 2 * w - 1, 2 * h - 1).permute(2, 0, 1, 3, 4)


def recurrent_features(z: torch.Tensor, u: torch.Tensor,
                       activation: Activation = torch.tanh) -> torch.Tensor:
    """The recurrent feature map of Balboni Def. 4: Φ_u(z)_t = σ(z_t + u Φ_u(z)_{t-1}), Φ_0 = 0.

    ``z`` is (n, T, q) (a batch of sequences of T points of R^q, already multiplied by the input
    weights: z_t = W x_t), ``u`` the (q, q) recurrent matrix. Returns Φ_u(z) of shape (n, T, q),
    the hidden states of the recurrence h_t = σ(W x_t + u h_{t-1}) with h_0 = 0.
    """
    z = check_tensor(z, "z", ndim=3)
    q = z.shape[2]
    u = check_tensor(u, "u", shape=(q, q))
    check_callable(activation, "activation")
    check_same_device(z=z, u=u)
    check_same_dtype(z=z, u=u)
    states, prev = [], torch.zeros_like(z[:, 0])
    for t in range(z.shape[1]):
        prev = activation(z[:, t] + prev @ u.T)
        states.append(prev)
    return torch.stack(states, dim=1)


def recurrent_kernel(z: torch.Tensor, z2: torch.Tensor, u: torch.Tensor,
                     activation: Activation = torch.tanh) -> torch.Tensor:
    """The parametric recurrent kernel of Balboni Def. 4 (a parametric kernel, Def. 1).

    K_u(z, z') e_{i;t} = (Φ_u(z)_t · Φ_u(z')_t) e_{i;t}, with Φ_u of
    :func:`recurrent_features`. ``z`` is (n, T, q), ``z2`` is (m, T, q); returns the values
    k_t(z_a, z2_b) as an (n, m, T) tensor (the same for every output coordinate i).
    """
    z = check_tensor(z, "z", ndim=3)
    z2 = check_tensor(z2, "z2", ndim=3)
    if z.shape[1:] != z2.shape[1:]:
        raise ValueError(f"z2 must have sequences of shape {tuple(z.shape[1:])} like z, "
                         f"got {tuple(z2.shape[1:])}")
    check_same_device(z=z, z2=z2)
    a, b = recurrent_features(z, u, activation), recurrent_features(z2, u, activation)
    return torch.einsum("atq,btq->abt", a, b)


@dataclass(frozen=True)
class KernelLayer:
    """One layer of a deep kernel machine: f(z) = Σ_ij α_ij K(w_i, z) e_j (Balboni §5.3).

    ``kind`` is ``"fc"`` (Def. 2, ``out_dim`` outputs), ``"conv"`` (Def. 3) or ``"recurrent"``
    (Def. 4, parameter ``u``); ``basis`` holds the p points w_i in the layer's input space.
    The number of outputs t is ``out_dim`` for fc, c(2w-1)(2h-1) for conv and Tq for recurrent
    (output index j = t q + i for sequence step t and coordinate i).
    """

    #: ``"fc"``, ``"conv"`` or ``"recurrent"``
    kind: str
    #: the p basis points w_i, one per row
    basis: torch.Tensor
    #: the activation φ of the kernel (default ``torch.tanh``)
    activation: Activation = torch.tanh
    #: the number of outputs of an fc layer
    out_dim: int | None = None
    #: the recurrent weight matrix of Def. 4
    u: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_choice(self.kind, "kind", KINDS)
        check_callable(self.activation, "activation")
        ndim = {"fc": 2, "conv": 4, "recurrent": 3}[self.kind]
        check_tensor(self.basis, "basis", ndim=ndim)
        if self.kind == "fc":
            check_int(self.out_dim, "out_dim", minimum=1)
        if self.kind == "recurrent":
            if self.u is None:
                raise ValueError("u must be given for a recurrent layer")
            q = self.basis.shape[2]
            check_tensor(self.u, "u", shape=(q, q))
            check_same_device(basis=self.basis, u=self.u)

    @property
    def n_basis(self) -> int:
        """p, the number of basis points."""
        return int(self.basis.shape[0])

    @property
    def n_outputs(self) -> int:
        """t = d_l, the dimension of the layer's output space."""
        if self.kind == "fc":
            assert self.out_dim is not None
            return self.out_dim
        if self.kind == "conv":
            _, c, w, h = self.basis.shape
            return c * (2 * w - 1) * (2 * h - 1)
        return int(self.basis.shape[1] * self.basis.shape[2])

    def values(self, z: torch.Tensor) -> torch.Tensor:
        """The output-diagonal kernel values k_j(w_i, z_k) as a (p, N, t) tensor."""
        check_same_device(basis=self.basis, z=check_tensor(z, "z", finite=False))
        if self.kind == "fc":
            k = fc_kernel(self.basis, z, self.activation)
            return k.unsqueeze(-1).expand(*k.shape, self.n_outputs)
        if self.kind == "conv":
            k = conv_kernel(self.basis, z, self.activation)
            return k.reshape(k.shape[0], k.shape[1], -1)
        assert self.u is not None
        k = recurrent_kernel(self.basis, z, self.u, self.activation)          # (p, N, T)
        q = self.basis.shape[2]
        return k.repeat_interleave(q, dim=-1)

    def matrix(self, z: torch.Tensor) -> torch.Tensor:
        """The layer matrix H_{ij,kω} = (K(w_i, z_k) e_j, e_ω) = δ_jω k_j(w_i, z_k), (pt, Nt).

        Row (i, j) is i t + j and column (k, ω) is k t + ω, so that X.reshape(-1) = α.reshape(-1) @ H.
        """
        v = self.values(z)
        p, n, t = v.shape
        eye = torch.eye(t, dtype=v.dtype, device=v.device)
        return torch.einsum("ikj,jw->ijkw", v, eye).reshape(p * t, n * t)

    def __call__(self, alpha: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The outputs X_kω = Σ_ij α_ij H_ij,kω = Σ_i α_iω k_ω(w_i, z_k), an (N, t) tensor.

        ``alpha`` is the (p, t) coefficient matrix.
        """
        alpha = check_tensor(alpha, "alpha", shape=(self.n_basis, self.n_outputs))
        check_same_device(basis=self.basis, alpha=alpha)
        return torch.einsum("ikw,iw->kw", self.values(z), alpha)

    def solve(self, z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The minimum-norm least-squares coefficients α with ``self(α, z)`` = ``target``.

        The same solution as :func:`last_layer_solution` on ``self.matrix(z)``, computed block by
        block: H is block diagonal in the output ω (output-diagonal kernel), so α_{:ω} solves
        Σ_i α_iω k_ω(w_i, z_k) = G_kω alone, a p × N system instead of one pt × Nt system (all
        blocks share one matrix for an fc layer). Returns α (p, t) and ‖α H − G‖ / ‖G‖.
        """
        v = self.values(z)                                                    # (p, N, t)
        target = check_tensor(target, "target", shape=(v.shape[1], self.n_outputs))
        check_same_device(z=z, target=target)
        check_same_dtype(z=v, target=target)
        if self.kind == "fc":
            alpha = torch.linalg.pinv(v[:, :, 0].T) @ target
        else:
            alpha = (torch.linalg.pinv(v.permute(2, 1, 0)) @ target.T.unsqueeze(-1)).squeeze(-1).T
        return alpha, _relative_residual(torch.einsum("ikw,iw->kw", v, alpha), target)


def dkm_outputs(layers: list[KernelLayer], alphas: list[torch.Tensor],
                x: torch.Tensor) -> list[torch.Tensor]:
    """The points z^l_k = f^l(z^{l-1}_k) of a DKM after every layer (Balboni §5.3, notation).

    Returns [X^1, ..., X^L], each (N, d_l); the input of layer l+1 is X^l reshaped to the shape
    of that layer's basis points.
    """
    if not isinstance(layers, (list, tuple)) or not all(isinstance(la, KernelLayer) for la in layers):
        raise TypeError("layers must be a list of KernelLayer")
    if not isinstance(alphas, (list, tuple)) or len(alphas) != len(layers):
        raise ValueError(f"alphas must be a list of {len(layers)} coefficient tensors")
    z = check_tensor(x, "x")
    check_same_device(x=z, **{f"layers[{i}].basis": la.basis for i, la in enumerate(layers)},
                      **{f"alphas[{i}]": check_tensor(a, f"alphas[{i}]", finite=False)
                         for i, a in enumerate(alphas)})
    outs = []
    for layer, alpha in zip(layers, alphas):
        z = z.reshape(z.shape[0], *layer.basis.shape[1:])
        z = layer(alpha, z)
        outs.append(z)
    return outs


def fc_independent_points(s: int, r: float, c: float, *, dtype: torch.dtype = torch.float64,
                          device: torch.device | str | None = None) -> torch.Tensor:
    """The points γ^i of Balboni Remark 1 / Lemma 9: γ^i_j = r if i = j, else c (an (s, s) tensor).

    Their Lemma 6 matrix for the fully-connected kernel is invertible iff σ(r) ≠ σ(c) and
    σ(r) ≠ -(s-1) σ(c) (Lemma 9 with Lemma 8).
    """
    s = check_int(s, "s", minimum=1)
    r, c = check_real(r, "r"), check_real(c, "c")
    eye = torch.eye(s, dtype=dtype, device=device)
    return c + (r - c) * eye


def recurrent_independent_points(gamma: torch.Tensor, u: torch.Tensor, steps: int,
                                 activation: Activation = torch.tanh) -> torch.Tensor:
    """Sequences whose recurrent features repeat σ(γ^i) at every step (Balboni Lemma 15's proof).

    z_1 = γ and z_t = γ - u σ(γ) for t ≥ 2 give Φ_u(z)_t = σ(γ) for every t. ``gamma`` is (p, q);
    returns (p, steps, q).
    """
    gamma = check_tensor(gamma, "gamma", ndim=2)
    q = gamma.shape[1]
    u = check_tensor(u, "u", shape=(q, q))
    check_same_device(gamma=gamma, u=u)
    steps = check_int(steps, "steps", minimum=1)
    check_callable(activation, "activation")
    later = gamma - activation(gamma) @ u.T
    seq = [gamma] + [later] * (steps - 1)
    return torch.stack(seq, dim=1)


def points_matrix(layer: KernelLayer) -> torch.Tensor:
    """The matrix of Balboni Lemma 6 for the layer's basis points: H_{ij,rs} = (K(w_i, w_r) e_j, e_s)."""
    if not isinstance(layer, KernelLayer):
        raise TypeError(f"layer must be a KernelLayer, got {type(layer).__name__}")
    return layer.matrix(layer.basis)


def min_singular_ratio(matrix: torch.Tensor) -> float:
    """σ_min / σ_max of a matrix with at least as many rows as columns (0 for a zero matrix).

    The matrix has full column rank iff the ratio is positive; numerically, iff it exceeds a
    tolerance set by the precision (see :func:`is_full_rank`).
    """
    matrix = check_tensor(matrix, "matrix", ndim=2)
    if matrix.shape[0] < matrix.shape[1]:
        raise ValueError(f"matrix must have at least as many rows as columns, got {tuple(matrix.shape)}")
    sv = torch.linalg.svdvals(matrix)
    top = float(sv[0]) if sv.numel() else 0.0
    return float(sv[-1]) / top if top > 0 else 0.0


def is_full_rank(matrix: torch.Tensor, rtol: float = 1e-10) -> bool:
    """Full column rank of a tall matrix, declared when σ_min > rtol σ_max (Balboni Lemma 10)."""
    rtol = check_positive(rtol, "rtol")
    return min_singular_ratio(matrix) > rtol


def are_independent(layer: KernelLayer, rtol: float = 1e-10) -> bool:
    """Independence of the layer's basis points (Balboni Def. 5), tested through Lemma 6.

    The points are independent iff H_{ij,rs} = (K(w_i, w_r) e_j, e_s) is nonsingular.
    """
    return is_full_rank(points_matrix(layer), rtol)


def minor_sum_of_squares(matrix: torch.Tensor, *, brute_force: bool = False) -> float:
    """φ = Σ_{I,J} det(R_{I,J})² over all maximal (n × n) minors of a tall (P × n) matrix R.

    The function φ(A) of the proof of Balboni Lemma 10: it vanishes iff R is rank deficient.
    With n columns, J is every column and Cauchy–Binet gives φ = det(Rᵀ R), which is what is
    returned; ``brute_force=True`` sums the squared minors instead (small matrices only).
    """
    matrix = check_tensor(matrix, "matrix", ndim=2)
    p, n = matrix.shape
    if p < n:
        raise ValueError(f"matrix must have at least as many rows as columns, got {(p, n)}")
    if brute_force:
        if p > 16:
            raise ValueError(f"matrix must have at most 16 rows for brute_force, got {p}")
        total = matrix.new_zeros(())
        for rows in itertools.combinations(range(p), n):
            total = total + torch.linalg.det(matrix[list(rows)]) ** 2
        return float(total)
    return float(torch.linalg.det(matrix.T @ matrix))


@dataclass
class DescendingPath:
    """The path α^L(τ) = (1-τ) α^L + τ V of Balboni Theorem 3 and the outputs along it.

    ``taus`` (n_steps,), ``alphas`` (n_steps, p, t), ``outputs`` (n_steps, N, t) with
    outputs[k] = (1-τ_k) X^L + τ_k G; ``V`` solves V H^L = G and ``residual`` is
    ‖V H^L - G‖ / ‖G‖ (zero when H^L has full column rank).
    """

    taus: torch.Tensor
    alphas: torch.Tensor
    outputs: torch.Tensor
    V: torch.Tensor
    residual: float


def last_layer_solution(H: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The minimum-norm least-squares solution V of V H = G and its relative residual.

    ``H`` is the (pt, Nt) last-layer matrix and ``target`` the (N, t) outputs G; returns V of
    shape (p, t) (by the pseudo-inverse, from the SVD, on H's device) and ‖V H − G‖ / ‖G‖, which
    is zero when H has full column rank. For the squared error ‖α H − G‖² V is the stationary
    point in α of least norm (Balboni Lemma 4) and the end of the path of Theorem 3.
    """
    H = check_tensor(H, "H", ndim=2)
    target = check_tensor(target, "target", ndim=2)
    check_same_device(H=H, target=target)
    check_same_dtype(H=H, target=target)
    if target.numel() != H.shape[1]:
        raise ValueError(f"target must have {H.shape[1]} entries (columns of H), got {target.numel()}")
    t = target.shape[1]
    if H.shape[0] % t:
        raise ValueError(f"H must have a multiple of t = {t} rows (p·t), got {H.shape[0]}")
    g = target.reshape(-1)
    v = torch.linalg.pinv(H.T) @ g
    return v.reshape(H.shape[0] // t, t), _relative_residual(v @ H, g)


def _relative_residual(fit: torch.Tensor, target: torch.Tensor) -> float:
    """‖fit − target‖ / ‖target‖, and 0 for a zero target matched exactly (in any float dtype)."""
    norm = torch.linalg.norm(target).clamp_min(torch.finfo(target.dtype).tiny)
    return float(torch.linalg.norm(fit - target) / norm)


def descending_path(H: torch.Tensor, alpha: torch.Tensor, target: torch.Tensor,
                    n_steps: int = 101) -> DescendingPath:
    """The last-layer path of the proof of Balboni Theorem 3 (PT property, Def. 6).

    ``H`` is the (pt, Nt) last-layer matrix, ``alpha`` the (p, t) coefficients and ``target`` the
    (N, t) outputs G to reach (the minimiser of a convex point loss). V is the least-squares
    solution of V H = G (:func:`last_layer_solution`); along α(τ) = (1-τ) α + τ V the outputs move on the segment from
    X = α H to V H, so a convex loss is non-increasing on it when V H = G.
    """
    H = check_tensor(H, "H", ndim=2)
    alpha = check_tensor(alpha, "alpha", ndim=2)
    target = check_tensor(target, "target", ndim=2)
    check_same_device(H=H, alpha=alpha, target=target)
    check_same_dtype(H=H, alpha=alpha, target=target)
    n_steps = check_int(n_steps, "n_steps", minimum=2)
    if alpha.numel() != H.shape[0]:
        raise ValueError(f"alpha must have {H.shape[0]} entries (rows of H), got {alpha.numel()}")
    if alpha.shape[1] != target.shape[1]:
        raise ValueError(f"alpha and target must have the same number of columns t, got "
                         f"{alpha.shape[1]} and {target.shape[1]}")
    V, residual = last_layer_solution(H, target)
    v = V.reshape(-1)
    taus = torch.linspace(0, 1, n_steps, dtype=H.dtype, device=H.device)
    a0 = alpha.reshape(-1)
    alphas = (1 - taus)[:, None] * a0 + taus[:, None] * v
    outputs = (alphas @ H).reshape(n_steps, *target.shape)
    return DescendingPath(taus, alphas.reshape(n_steps, *alpha.shape), outputs, V, residual)
