"""The empirical neural tangent kernel and the quantities of the lazy-training analysis.

Notation follows Chiang §10.2: a model f(x, w) with parameters w ∈ R^p, its outputs on the
training inputs stacked into 𝐟(w) (eq. 10.22), the Jacobian D𝐟 = ∂𝐟/∂w (eq. 10.23)
and the kernel D𝐟 D𝐟ᵀ that drives the gradient flow (the term (*) of eq. 10.28). Frozen
at the initial weights w₀ it is the *neural tangent kernel* (Jacot et al. 2018):

    Θ(x, x′)[o, o′] = ⟨∂f_o(x, w₀)/∂w, ∂f_o′(x′, w₀)/∂w⟩.

* :func:`empirical_ntk` — Θ on two batches of inputs, by one of two implementations:

  - ``"structured"`` — for an ``nn.Sequential`` of ``Linear`` layers and pointwise
    activations. With pre-activations z_l = W_l h_{l−1} + b_l and the backpropagated
    Jacobians J_l(x) = ∂f/∂z_l (shape O × n_l), the chain rule gives the layer-wise closed form

        Θ(x, x′) = Σ_l J_l(x) J_l(x′)ᵀ · (⟨h_{l−1}(x), h_{l−1}(x′)⟩ + 1[layer l has a bias]),

    so no per-example parameter Jacobian (O × p per input) is ever formed. Cost
    O(n (O Σ_l n_l n_{l−1}) + n₁ n₂ O² Σ_l n_l) time, O(n O Σ_l n_l + n₁ n₂ O²) memory.
  - ``"generic"`` — any module, through ``torch.func``: per-example Jacobians by
    ``vmap(jacrev)`` in chunks of inputs, contracted parameter by parameter. Cost
    O(n O p) memory per chunk and O(n₁ n₂ O² p) time; the chunk size keeps the Jacobians held
    at once under ``max_memory_bytes`` (then chunks of x2 are recomputed for each chunk of x1).
  - ``"auto"`` — ``"structured"`` whenever the model is supported, else ``"generic"``
    (the benchmark ``benchmarks/bench_ntk.py`` measures the structured path faster on every
    supported shape it tries, since Σ_l n_l ≤ p).

* :func:`ntk_vector_product` — Θ v without forming Θ: a VJP (u = D𝐟ᵀ v) then a JVP
  (D𝐟 u).
* :func:`second_derivative_norm` and :func:`kappa_f` — the inverse relative scale
  κ_f(w₀) = ‖y − 𝐟(w₀)‖ ‖D²𝐟(w₀)‖ / ‖D𝐟(w₀)‖² (Chiang eqs 10.42–10.43, after
  Chizat et al. 2019), with ‖D²𝐟‖ estimated by power iteration on Hessian–vector products.
* :class:`ScaledModel` — the scaled model α·f of Chiang eqs 10.44–10.45.
* :class:`AntisymmetricPair` — the doubled, antisymmetric initialisation
  f(x, (w_a, w_b)) = (h(x, w_a) − h(x, w_b))/√2 with w_a = w_b at initialisation, so that
  f(x, w₀) = 0 (Chiang §10.2.2, "Scaled models") while the NTK at w₀ equals that of h.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from . import autodiff
from .curvature import HessianOperator

from .validation import (
    check_choice,
    check_int,
    check_positive,
    check_same_device,
    check_same_dtype,
    check_tensor,
)

__all__ = [
    "POINTWISE_ACTIVATIONS",
    "empirical_ntk",
    "ntk_matrix",
    "is_structured_supported",
    "ntk_vector_product",
    "second_derivative_norm",
    "kappa_f",
    "SecondDerivativeNorm",
    "KappaResult",
    "ScaledModel",
    "AntisymmetricPair",
]

#: Modules the structured path treats as pointwise (elementwise) functions.
POINTWISE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Tanh,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Softplus,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Softsign,
    nn.Hardtanh,
)

_IMPLEMENTATIONS = ("auto", "structured", "generic")
_DEFAULT_CPU_MEMORY = 4 << 30  # 4 GiB of Jacobians held at once by the generic path on a CPU


def _default_memory(device: torch.device) -> int:
    """The generic path's default Jacobian budget: half the free memory of a GPU, else 4 GiB."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, free // 2)
    return _DEFAULT_CPU_MEMORY


# ----------------------------------------------------------------------------------------
# wrappers: scaled models and the antisymmetric initialisation
# ----------------------------------------------------------------------------------------


class ScaledModel(nn.Module):
    """The scaled model x ↦ α·f(x) of Chiang eqs 10.44–10.45 (Chizat et al. 2019).

    Its Jacobian is α D𝐟 and its second derivative α D²𝐟, so its NTK is α² times that
    of ``model`` and κ_{αf} = ‖y − α𝐟‖ ‖D²𝐟‖ / (α ‖D𝐟‖²) (eq. 10.44).
    """

    def __init__(self, model: nn.Module, alpha: float) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.alpha = check_positive(alpha, "alpha")
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.model(x)


class AntisymmetricPair(nn.Module):
    """f(x) = (h(x, w_a) − h(x, w_b)) / √2 with both copies equal to ``model`` at creation.

    The doubled, antisymmetric initialisation of Chiang §10.2.2 ("initialise half of the
    network randomly and the other half to its negative"): f(x, w₀) = 0 for every x, while the
    tangent kernel at w₀ is ½(Θ_h + Θ_h) = Θ_h, the kernel of ``model`` itself. Both copies are
    deep copies, trained independently afterwards; ``model`` is not modified.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.plus = copy.deepcopy(model)
        self.minus = copy.deepcopy(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.plus(x) - self.minus(x)) / math.sqrt(2.0)


# ----------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    # every parameter counts, as in nnopt.autodiff (frozen ones too: w is all of them)
    return dict(model.named_parameters())


def _check_model(model: object) -> dict[str, torch.Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = _trainable(model)
    if not params:
        raise ValueError("model must have at least one parameter (it has none)")
    return params


def _check_inputs(
    model: nn.Module, x1: object, x2: object | None
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
    params = _check_model(model)
    # shapes, dtypes and devices first (finiteness needs the data, so it comes last)
    x1 = check_tensor(x1, "x1", finite=False)
    if x1.ndim < 2:
        raise ValueError(
            f"x1 must have a batch dimension and at least one feature dimension, "
            f"got shape {tuple(x1.shape)}"
        )
    if x1.shape[0] == 0:
        raise ValueError("x1 must contain at least one input (got an empty batch)")
    if x2 is not None:
        x2 = check_tensor(x2, "x2", finite=False)
        if x2.ndim != x1.ndim or x2.shape[1:] != x1.shape[1:]:
            raise ValueError(
                f"x2 must have the same feature dimensions as x1: x1 has shape "
                f"{tuple(x1.shape)}, x2 has shape {tuple(x2.shape)}"
            )
        if x2.shape[0] == 0:
            raise ValueError("x2 must contain at least one input (got an empty batch)")
        check_same_device(x1=x1, x2=x2)
        check_same_dtype(x1=x1, x2=x2)
        check_tensor(x2, "x2")
    check_tensor(x1, "x1")
    first = next(iter(params.values()))
    if first.device != x1.device:
        raise ValueError(
            f"x1 and the model's parameters must be on the same device, got x1 on {x1.device} "
            f"and model on {first.device}"
        )
    if first.dtype != x1.dtype:
        raise TypeError(
            f"x1 must have the dtype of the model's parameters ({first.dtype}), got {x1.dtype}"
        )
    return params, x1, x2


# ----------------------------------------------------------------------------------------
# structured path
# ----------------------------------------------------------------------------------------


def _flatten_sequential(model: nn.Module) -> list[nn.Module] | None:
    if not isinstance(model, nn.Sequential):
        return None
    out: list[nn.Module] = []
    for m in model:
        if isinstance(m, nn.Sequential):
            inner = _flatten_sequential(m)
            if inner is None:
                return None
            out.extend(inner)
        else:
            out.append(m)
    return out


def _structured_layers(model: nn.Module) -> list[nn.Module] | None:
    layers = _flatten_sequential(model)
    if layers is None:
        return None
    if not any(isinstance(m, nn.Linear) for m in layers):
        return None
    for i, m in enumerate(layers):
        if isinstance(m, nn.Linear):
            pass
        elif isinstance(m, nn.Flatten):
            if i != 0 or m.start_dim != 1 or m.end_dim != -1:
                return None
        elif isinstance(m, POINTWISE_ACTIVATIONS):
            if any(True for _ in m.parameters()):
                return None
        else:
            return None
    return layers


def is_structured_supported(model: nn.Module) -> bool:
    """Whether the structured path handles ``model``.

    Supported: an ``nn.Sequential`` (nested ones are flattened) of ``nn.Linear`` layers, the pointwise activations in :data:`POINTWISE_ACTIVATIONS`, an
    optional leading ``nn.Flatten()``; and :class:`ScaledModel` / :class:`AntisymmetricPair`
    wrappers around a supported model.
    """
    if isinstance(model, ScaledModel):
        return is_structured_supported(model.model)
    if isinstance(model, AntisymmetricPair):
        return is_structured_supported(model.plus) and is_structured_supported(model.minus)
    return _structured_layers(model) is not None


def _pointwise_derivative(segment: list[nn.Module], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value φ(z) and elementwise derivative φ'(z) of a chain of pointwise activations."""
    if not segment:
        return z, torch.ones_like(z)
    with torch.enable_grad():
        a = z.detach().requires_grad_(True)
        out = a
        for m in segment:
            out = m(out)
        (d,) = torch.autograd.grad(out.sum(), a)
    return out.detach(), d


@dataclass
class _Trace:
    inputs: list[torch.Tensor]  # h_{l-1} for each Linear layer, (n, in_l)
    jacobians: list[torch.Tensor]  # J_l = ∂f/∂z_l, (n, O, n_l)
    has_bias: list[bool]


def _structured_trace(layers: list[nn.Module], x: torch.Tensor) -> _Trace:
    h = x.reshape(x.shape[0], -1) if isinstance(layers[0], nn.Flatten) else x
    if h.ndim != 2:
        raise ValueError(
            f"x1 must have shape (n, features) for a Sequential of Linear layers, got {tuple(x.shape)}"
        )
    # split into: leading activations, then [Linear, activations...] blocks
    blocks: list[tuple[nn.Linear, list[nn.Module]]] = []
    lead: list[nn.Module] = []
    for m in layers:
        if isinstance(m, nn.Flatten):
            continue
        if isinstance(m, nn.Linear):
            blocks.append((m, []))
        elif blocks:
            blocks[-1][1].append(m)
        else:
            lead.append(m)
    with torch.no_grad():
        for m in lead:
            h = m(h)
        inputs, derivs = [], []
        for lin, acts in blocks:
            inputs.append(h)
            z = torch.nn.functional.linear(h, lin.weight, lin.bias)
            h, d = _pointwise_derivative(acts, z)
            derivs.append(d)
        n, O = h.shape
        J = torch.diag_embed(derivs[-1])  # (n, O, O)
        jacobians = [J]
        for l in range(len(blocks) - 1, 0, -1):
            W = blocks[l][0].weight  # (n_l, n_{l-1})
            J = (J @ W) * derivs[l - 1].unsqueeze(1)
            jacobians.append(J)
        jacobians.reverse()
    return _Trace(inputs, jacobians, [lin.bias is not None for lin, _ in blocks])


def _structured_kernel(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None) -> torch.Tensor:
    """Θ of shape (n1, n2, O, O) by the layer-wise closed form."""
    if isinstance(model, ScaledModel):
        return model.alpha**2 * _structured_kernel(model.model, x1, x2)
    if isinstance(model, AntisymmetricPair):
        return 0.5 * (_structured_kernel(model.plus, x1, x2) + _structured_kernel(model.minus, x1, x2))
    layers = _structured_layers(model)
    assert layers is not None
    t1 = _structured_trace(layers, x1)
    t2 = t1 if x2 is None else _structured_trace(layers, x2)
    n1, O = t1.jacobians[-1].shape[:2]
    n2 = t2.jacobians[-1].shape[0]
    theta = torch.zeros(n1, n2, O, O, dtype=x1.dtype, device=x1.device)
    for h1, h2, J1, J2, bias in zip(t1.inputs, t2.inputs, t1.jacobians, t2.jacobians, t1.has_bias):
        gram = h1 @ h2.T
        if bias:
            gram = gram + 1.0
        k = (J1.reshape(n1 * O, -1) @ J2.reshape(n2 * O, -1).T).reshape(n1, O, n2, O)
        theta += k.permute(0, 2, 1, 3) * gram[:, :, None, None]
    return theta


# ----------------------------------------------------------------------------------------
# generic path
# ----------------------------------------------------------------------------------------


def _single_output_fn(model: nn.Module) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    buffers = dict(model.named_buffers())

    def f(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (params, buffers), (x.unsqueeze(0),))
        return out.reshape(-1)

    return f


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _generic_kernel(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    chunk_size: int | None,
    max_memory_bytes: int,
) -> torch.Tensor:
    """Θ of shape (n1, n2, O, O) by chunked per-example Jacobians (torch.func)."""
    detached = {k: v.detach() for k, v in params.items()}
    f = _single_output_fn(model)
    jac = vmap(jacrev(f), in_dims=(None, 0))
    with torch.no_grad():
        O = int(f(detached, x1[0]).numel())
    p = sum(v.numel() for v in detached.values())
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if chunk_size is None:
        per_example = max(1, O * p * x1.element_size())
        chunk_size = max(1, max_memory_bytes // (2 * per_example))
        if (n1 + (0 if x2 is None else n2)) * per_example <= max_memory_bytes:
            chunk_size = max(n1, n2)  # everything fits: one chunk, no recomputation
    theta = torch.zeros(n1, n2, O, O, dtype=x1.dtype, device=x1.device)

    def jacobian(x: torch.Tensor) -> list[torch.Tensor]:
        j = jac(detached, x)
        return [j[k].reshape(x.shape[0] * O, -1) for k in detached]

    def contract(a: list[torch.Tensor], b: list[torch.Tensor], na: int, nb: int) -> torch.Tensor:
        k = torch.zeros(na * O, nb * O, dtype=x1.dtype, device=x1.device)
        for ja, jb in zip(a, b):
            k += ja @ jb.T
        return k.reshape(na, O, nb, O).permute(0, 2, 1, 3)

    s1 = list(_chunks(n1, chunk_size))
    if x2 is not None and chunk_size >= max(n1, n2):
        # everything fits: one batched Jacobian of x1 and x2 together, then one contraction
        j = jacobian(torch.cat([x1, x2]))
        a = [t[: n1 * O] for t in j]
        b = [t[n1 * O :] for t in j]
        return contract(a, b, n1, n2).contiguous()
    if x2 is None:
        for i, si in enumerate(s1):
            ji = jacobian(x1[si])
            for sj in s1[i:]:
                jj = ji if sj == si else jacobian(x1[sj])
                block = contract(ji, jj, si.stop - si.start, sj.stop - sj.start)
                theta[si, sj] = block
                if sj != si:
                    theta[sj, si] = block.permute(1, 0, 3, 2)
    else:
        s2 = list(_chunks(n2, chunk_size))
        for si in s1:
            ji = jacobian(x1[si])
            for sj in s2:
                jj = jacobian(x2[sj])
                theta[si, sj] = contract(ji, jj, si.stop - si.start, sj.stop - sj.start)
    return theta


# ----------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------


def ntk_matrix(theta: torch.Tensor) -> torch.Tensor:
    """Flatten a kernel of shape (n1, n2, O, O) to the (n1·O, n2·O) matrix D𝐟(x1) D𝐟(x2)ᵀ.

    Rows are ordered example-major (example a, output o ↦ row a·O + o), the order of
    ``model(x).reshape(-1)``; a kernel of shape (n1, n2) is returned unchanged.
    """
    check_tensor(theta, "theta", ndim=(2, 4))
    if theta.ndim == 2:
        return theta
    n1, n2, O, O2 = theta.shape
    if O != O2:
        raise ValueError(f"theta must have shape (n1, n2, O, O), got {tuple(theta.shape)}")
    return theta.permute(0, 2, 1, 3).reshape(n1 * O, n2 * O)


def empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    implementation: str = "auto",
    chunk_size: int | None = None,
    max_memory_bytes: int | None = None,
) -> torch.Tensor:
    """The empirical tangent kernel Θ(x, x′)[o, o′] = ⟨∂f_o(x)/∂w, ∂f_o′(x′)/∂w⟩ at the current w.

    This is the term (*) of Chiang eq. 10.28, D𝐟(w) D𝐟(w)ᵀ, evaluated between two
    batches; at w = w₀ it is the NTK of Jacot et al. (2018). The derivative is over all the
    model's parameters (as in :mod:`nnopt.autodiff`); the model is not modified.

    Parameters
    ----------
    model
        The network; called on a batch ``x`` of shape ``(n, *features)``.
    x1, x2
        Inputs of shapes ``(n1, *features)`` and ``(n2, *features)``; ``x2=None`` means ``x1``
        (and the symmetry of Θ is used).
    implementation
        ``"structured"`` (layer-wise closed form; ``nn.Sequential`` of ``Linear`` layers and
        pointwise activations only, see :func:`is_structured_supported`), ``"generic"``
        (chunked ``torch.func`` Jacobians, any module whose output on one example does not
        depend on the others) or ``"auto"`` (structured when supported). Costs are in the
        module docstring.
    chunk_size, max_memory_bytes
        Generic path only: inputs per Jacobian chunk. By default the chunk is chosen so that
        the Jacobians held at once stay under ``max_memory_bytes`` (default: half the free
        memory of a GPU, 4 GiB on a CPU); when the Jacobians of all of x1 and x2 fit in the
        budget there is a single chunk and no Jacobian is computed twice.

    Returns
    -------
    A tensor of shape ``(n1, n2)`` when the model has one output per example, else
    ``(n1, n2, O, O)``.
    """
    check_choice(implementation, "implementation", _IMPLEMENTATIONS)
    params, x1, x2 = _check_inputs(model, x1, x2)
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    if max_memory_bytes is None:
        max_memory_bytes = _default_memory(x1.device)
    max_memory_bytes = check_int(max_memory_bytes, "max_memory_bytes", minimum=1)
    supported = is_structured_supported(model)
    if implementation == "structured" and not supported:
        raise ValueError(
            "implementation='structured' needs an nn.Sequential of Linear layers and pointwise "
            f"activations (see is_structured_supported); got {type(model).__name__}. "
            "Use implementation='generic'."
        )
    if implementation == "structured" or (implementation == "auto" and supported):
        theta = _structured_kernel(model, x1, x2)
    else:
        theta = _generic_kernel(model, params, x1, x2, chunk_size, max_memory_bytes)
    if theta.shape[-1] == 1:
        return theta[..., 0, 0]
    return theta


def _functional(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Callable]:
    params = autodiff.params_of(model)
    buffers = dict(model.named_buffers())

    def f(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(model, (p, buffers), (x,))

    return params, f


def ntk_vector_product(model: nn.Module, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Θ v = D𝐟 (D𝐟ᵀ v) on the batch ``x``, without forming Θ (Chiang eq. 10.28, term (*)).

    A vector–Jacobian product u = D𝐟ᵀ v (one backward pass, :func:`nnopt.autodiff.vjp`)
    then a Jacobian–vector product D𝐟 u (one forward-mode pass, :func:`nnopt.autodiff.jvp`).
    ``v`` has the shape of ``model(x)``; so has the result, which equals
    ``ntk_matrix(empirical_ntk(model, x)) @ v.reshape(-1)`` reshaped.
    """
    _, x, _ = _check_inputs(model, x, None)
    with torch.no_grad():
        out = model(x)
    check_tensor(v, "v", shape=tuple(out.shape))
    check_same_device(x=x, v=v)
    check_same_dtype(x=x, v=v)
    params = autodiff.params_of(model)
    u = autodiff.vjp(model, x, v, params=params, flat=False)
    return autodiff.jvp(model, x, u, params=params).detach()


# ----------------------------------------------------------------------------------------
# κ_f and ‖D²f‖
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecondDerivativeNorm:
    """Result of :func:`second_derivative_norm`.

    ``value`` is ‖D²𝐟‖; ``direction`` the unit parameter direction u (flattened) and
    ``output_direction`` the unit c ∈ R^{n·O} attaining it, c·D²𝐟[u, u] = value;
    ``residual`` = ‖H_c u − λ u‖ of the last power iteration; ``n_matvecs`` counts
    Hessian–vector products.
    """

    value: float
    residual: float
    n_matvecs: int
    converged: bool
    direction: torch.Tensor
    output_direction: torch.Tensor


@dataclass(frozen=True)
class KappaResult:
    """κ_f(w₀) = ‖y − 𝐟(w₀)‖ ‖D²𝐟(w₀)‖ / ‖D𝐟(w₀)‖² and its three factors."""

    value: float
    residual_norm: float
    df_norm: float
    d2f_norm: float
    residual: float
    n_matvecs: int
    converged: bool


def _contract(out: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """c·f, the scalar whose Hessian is H_c = Σ_i c_i ∇²f_i (a "loss" for nnopt.autodiff.hvp)."""
    return (out * c).sum()


def second_derivative_norm(
    model: nn.Module,
    x: torch.Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    restarts: int = 2,
    seed: int = 0,
) -> SecondDerivativeNorm:
    """‖D²𝐟(w)‖ = sup_{‖u‖=1} ‖D²𝐟[u, u]‖ by power iteration on Hessian–vector products.

    D²𝐟 is the second derivative of the stacked outputs 𝐟(w) ∈ R^{n·O} (Chiang eq. 10.38,
    where ‖·‖ is the operator norm), a symmetric bilinear map R^p × R^p → R^{n·O}; its norm is
    sup_{‖c‖=1} ‖H_c‖₂ with H_c = Σ_i c_i ∇²f_i the Hessian of c·𝐟. The estimate alternates

    (i) power iteration for the eigenpair (λ, u) of H_c of largest |λ|, with Hessian–vector
        products from :class:`nnopt.curvature.HessianOperator`; the iterate is plain power
        iteration, and the Rayleigh–Ritz pair of span{u, H_c u} is read off at each step to
        separate a pair of eigenvalues ±λ, on which plain power iteration oscillates;
    (ii) c ← D²𝐟[u, u] / ‖D²𝐟[u, u]‖ (a forward-over-forward derivative).

    Each alternation cannot decrease the estimate, ‖H_c‖ ≤ ‖D²𝐟[u, u]‖ ≤ ‖H_{c′}‖, but it can
    stop at a local maximum, so ``restarts`` random starts (seeds ``seed``, ``seed + 1``, …) are
    run and the largest value kept. The result is a lower bound on ‖D²𝐟‖, exact (up to
    ``tol``) when n·O = 1, where it is the spectral norm of the Hessian of f.

    ``max_iter`` bounds each inner power iteration and the number of alternations. The inner
    iteration stops when the residual ‖H_c u − λu‖ ≤ ``tol``·|λ|, the outer one when the
    estimate changes by at most ``tol`` relative; ``converged`` reports whether both happened.
    """
    _, x, _ = _check_inputs(model, x, None)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_positive(tol, "tol")
    restarts = check_int(restarts, "restarts", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    params, f = _functional(model, x)
    p0 = autodiff.flatten(params)
    with torch.no_grad():
        out_shape = f(params).shape

    def second_directional(u_vec: torch.Tensor) -> torch.Tensor:
        ud = autodiff.unflatten(u_vec, params)

        def df(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return jvp(f, (p,), (ud,))[1]

        return jvp(df, (params,), (ud,))[1].reshape(-1).detach()

    def hessian(c: torch.Tensor) -> HessianOperator:
        # H_c as a matrix-free operator: the gradient of c·f is built once with its graph,
        # each product is one more backward pass through it (nnopt.curvature)
        return HessianOperator(model, _contract, x, c.reshape(out_shape), params)

    best: SecondDerivativeNorm | None = None
    total_mv = 0
    for r in range(restarts):
        gen = torch.Generator(device="cpu").manual_seed(seed + r)
        u = torch.randn(p0.numel(), generator=gen, dtype=torch.float64).to(p0)
        u = u / u.norm()
        g = second_directional(u)
        c = g / g.norm() if g.norm() > 0 else torch.ones_like(g) / math.sqrt(g.numel())
        estimate, residual, converged = 0.0, float("inf"), False
        for _ in range(max_iter):
            op = hessian(c)
            hu = op.matvec(u)
            total_mv += 1
            lam, inner_ok = float(u @ hu), False
            for _ in range(max_iter):
                # plain power step u ← H_c u / ‖H_c u‖, which converges to the span of the
                # eigenvectors of largest |λ| (±λ included); the Ritz pair of span{u, H_c u}
                # picks the eigenvector inside it and gives the residual. One product per step:
                # H_c (H_c u) is recovered from H_c u and H_c q.
                uh = u @ hu
                q = hu - uh * u
                qn = q.norm()
                if qn <= tol * max(abs(float(uh)), 1e-300):
                    lam, residual, inner_ok = float(uh), float(qn), True
                    break
                q = q / qn
                hq = op.matvec(q)
                total_mv += 1
                t = torch.stack([torch.stack([uh, q @ hu]), torch.stack([q @ hu, q @ hq])])
                evals, evecs = torch.linalg.eigh(t)
                k = int(evals.abs().argmax())
                a, b = evecs[0, k], evecs[1, k]
                ritz, h_ritz = a * u + b * q, a * hu + b * hq
                nrm = ritz.norm()
                ritz, h_ritz = ritz / nrm, h_ritz / nrm
                lam = float(evals[k])
                residual = float((h_ritz - lam * ritz).norm())
                if residual <= tol * abs(lam):
                    u, hu, inner_ok = ritz, h_ritz, True
                    break
                hnorm = hu.norm()
                u, hu = hu / hnorm, (uh * hu + qn * hq) / hnorm
            else:
                u = ritz
            g = second_directional(u)
            value = float(g.norm())
            if value == 0:
                converged = inner_ok
                break
            c = g / value
            if abs(value - estimate) <= tol * value and inner_ok:
                estimate, converged = value, True
                break
            estimate = max(estimate, value)
        if best is None or estimate > best.value:
            best = SecondDerivativeNorm(estimate, residual, 0, converged, u, c)
    assert best is not None
    return SecondDerivativeNorm(best.value, best.residual, total_mv, best.converged,
                                best.direction, best.output_direction)


def kappa_f(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    restarts: int = 2,
    seed: int = 0,
) -> KappaResult:
    """The inverse relative scale κ_f(w) = ‖y − 𝐟(w)‖ ‖D²𝐟(w)‖ / ‖D𝐟(w)‖² (Chiang eqs 10.42–10.43).

    ‖D𝐟‖ is the operator 2-norm of the (n·O) × p Jacobian, the square root of the largest
    eigenvalue of the tangent kernel (computed exactly from :func:`empirical_ntk`); ‖D²𝐟‖
    comes from :func:`second_derivative_norm`. For a :class:`ScaledModel` α·f this is
    κ_{αf} of eq. 10.44, which equals ‖y‖ ‖D²𝐟‖ / (α ‖D𝐟‖²) when 𝐟(w₀) = 0 (eq. 10.45).
    ``y`` has the shape of ``model(x)``.
    """
    _, x, _ = _check_inputs(model, x, None)
    with torch.no_grad():
        out = model(x)
    check_tensor(y, "y", shape=tuple(out.shape))
    check_same_device(x=x, y=y)
    check_same_dtype(x=x, y=y)
    theta = ntk_matrix(empirical_ntk(model, x))
    df_norm = math.sqrt(max(float(torch.linalg.eigvalsh(theta)[-1]), 0.0))
    d2 = second_derivative_norm(model, x, max_iter=max_iter, tol=tol, restarts=restarts, seed=seed)
    res = float((y - out).norm())
    value = res * d2.value / df_norm**2 if df_norm > 0 else math.inf
    return KappaResult(value, res, df_norm, d2.value, d2.residual, d2.n_matvecs, d2.converged)
