"""Functional automatic differentiation for a ``torch.nn.Module`` and a loss.

The curvature of a loss L(w) = loss_fn(f(x; w), y) is probed without ever forming the
Hessian ∇²L(w) (Chiang Def. 10.1: L is β-smooth iff every eigenvalue of ∇²L is at most β).
Everything here works on a *parameter dict* ``{name: tensor}`` that is separate from the
module, so that no estimator ever changes a module's parameters in place:

* :func:`params_of` — detached copies of a module's parameters.
* :func:`functional_call` — the module evaluated at a parameter dict, f(x; w).
* :func:`flatten` / :func:`unflatten` — a parameter dict as one vector w ∈ ℝᴾ and back.
* :func:`loss_value`, :func:`gradient` — L(w) and ∇L(w).
* :func:`hvp` — the Hessian-vector product ∇²L(w) v, by forward-over-reverse
  differentiation (the directional derivative of ∇L along v, Pearlmutter's R-operator):
  ∇²L(w) v = d/dt ∇L(w + t v) at t = 0.
* :func:`jvp`, :func:`vjp` — Jacobian-vector products J v and vector-Jacobian products
  Jᵀ u of the network output f(x; w) with respect to w (J = ∂f/∂w, the matrix whose
  Gram matrix J Jᵀ is the empirical tangent kernel of Chiang eq. 10.27).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

import torch
from torch import nn

from .validation import check_callable, check_same_device, check_same_dtype, check_tensor

__all__ = [
    "Params",
    "params_of",
    "functional_call",
    "flatten",
    "unflatten",
    "num_params",
    "loss_value",
    "gradient",
    "hvp",
    "jvp",
    "vjp",
]

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- validation


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not any(True for _ in model.parameters()):
        raise ValueError("model must have at least one parameter")
    return model


def _check_loss_fn(loss_fn: object) -> LossFn:
    check_callable(loss_fn, "loss_fn", signature="loss_fn(outputs, targets)")
    return cast(LossFn, loss_fn)


def _check_params(params: object, model: nn.Module, name: str = "params") -> Params:
    """A dict with exactly the model's parameter names and shapes, floating and finite."""
    if not isinstance(params, Mapping):
        raise TypeError(f"{name} must be a dict of tensors keyed by parameter name, got "
                        f"{type(params).__name__}")
    expected = dict(model.named_parameters())
    if set(params) != set(expected):
        missing = sorted(set(expected) - set(params))
        extra = sorted(set(params) - set(expected))
        raise ValueError(f"{name} must have the model's parameter names; missing {missing}, "
                         f"unexpected {extra}")
    for key, ref in expected.items():
        check_tensor(params[key], f"{name}[{key!r}]", shape=tuple(ref.shape))
    return dict(params)


def _check_like(tree: object, params: Params, name: str) -> Params:
    """A dict with the same keys and shapes (and dtype, device) as ``params``."""
    if not isinstance(tree, Mapping):
        raise TypeError(f"{name} must be a dict of tensors or a flat tensor, got "
                        f"{type(tree).__name__}")
    if set(tree) != set(params):
        raise ValueError(f"{name} must have the keys {sorted(params)}, got {sorted(tree)}")
    for key, ref in params.items():
        t = check_tensor(tree[key], f"{name}[{key!r}]", shape=tuple(ref.shape))
        check_same_dtype(**{name: t, "params": ref})
        check_same_device(**{name: t, "params": ref})
    return dict(tree)


def _check_on_params_device(params: Params, **tensors: torch.Tensor) -> None:
    """The named tensors live on the device of the parameters (that of the first one)."""
    check_same_device(**tensors, params=next(iter(params.values())))


def _check_data(x: object, y: object | None = None, params: Params | None = None) -> None:
    """Inputs x and targets y, one row per example, on one device (that of ``params`` if given)."""
    xt = check_tensor(x, "x", ndim=range(1, 8))
    if y is not None:
        yt = check_tensor(y, "y", floating=False)
        if yt.ndim == 0 or yt.shape[0] != xt.shape[0]:
            raise ValueError(f"y must have one row per example of x ({xt.shape[0]}), got "
                             f"shape {tuple(yt.shape)}")
        check_same_device(x=xt, y=yt)
    if params is not None:
        _check_on_params_device(params, x=xt)


def _resolve(model: object, params: object | None) -> tuple[nn.Module, Params]:
    model = _check_model(model)
    if params is None:
        return model, params_of(model)
    return model, _check_params(params, model)


# --------------------------------------------------------------------------- parameters


def params_of(model: nn.Module) -> Params:
    """Detached copies ``{name: w.detach().clone()}`` of the module's parameters.

    The copies share nothing with the module, so changing them (or differentiating
    through them) never touches the module.
    """
    model = _check_model(model)
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def functional_call(model: nn.Module, params: Mapping[str, torch.Tensor],
                    x: torch.Tensor) -> torch.Tensor:
    """The network output f(x; w) with the parameters taken from ``params``.

    A thin, validated wrapper around :func:`torch.func.functional_call`; the module's
    own parameters are neither used nor changed (its buffers are used as they are).
    """
    model = _check_model(model)
    params = _check_params(params, model)
    _check_on_params_device(params, x=check_tensor(x, "x"))
    return torch.func.functional_call(model, params, (x,))


def num_params(params: Mapping[str, torch.Tensor]) -> int:
    """P = the total number of scalar parameters in a parameter dict."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of tensors, got {type(params).__name__}")
    return sum(int(t.numel()) for t in params.values())


def flatten(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate a parameter dict into one vector w ∈ ℝᴾ (in the dict's key order)."""
    if not isinstance(params, Mapping) or not params:
        raise TypeError("params must be a non-empty dict of tensors")
    tensors = list(params.values())
    for key, t in params.items():
        check_tensor(t, f"params[{key!r}]", finite=False)
    check_same_dtype(**{f"params[{k!r}]": t for k, t in params.items()})
    check_same_device(**{f"params[{k!r}]": t for k, t in params.items()})
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Params:
    """Split a vector of length P into a dict shaped like ``like`` (inverse of :func:`flatten`)."""
    if not isinstance(like, Mapping) or not like:
        raise TypeError("like must be a non-empty dict of tensors")
    n = num_params(like)
    check_tensor(vector, "vector", shape=(n,), finite=False)
    out: Params = {}
    start = 0
    for key, ref in like.items():
        size = int(ref.numel())
        out[key] = vector[start:start + size].view(ref.shape)
        start += size
    return out


# --------------------------------------------------------------------------- derivatives


def _scalar_loss(value: object) -> torch.Tensor:
    """The value of ``loss_fn`` as a 0-d tensor; a clear error if it is not a single number."""
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor")
    return value.reshape(())


def _loss_of(model: nn.Module, loss_fn: LossFn, x: torch.Tensor,
             y: torch.Tensor) -> Callable[[Params], torch.Tensor]:
    def loss(p: Params) -> torch.Tensor:
        return _scalar_loss(loss_fn(torch.func.functional_call(model, p, (x,)), y))
    return loss


def loss_value(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
               params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """L(w) = loss_fn(f(x; w), y) at ``params`` (default: the module's own parameters)."""
    model, p = _resolve(model, params)
    loss_fn = _check_loss_fn(loss_fn)
    _check_data(x, y, p)
    with torch.no_grad():
        return _loss_of(model, loss_fn, x, y)(p)


def gradient(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
             params: Mapping[str, torch.Tensor] | None = None, *,
             flat: bool = False) -> Params | torch.Tensor:
    """∇L(w), the gradient of L(w) = loss_fn(f(x; w), y), as a dict (or a vector if ``flat``)."""
    model, p = _resolve(model, params)
    loss_fn = _check_loss_fn(loss_fn)
    _check_data(x, y, p)
    g = torch.func.grad(_loss_of(model, loss_fn, x, y))(p)
    return flatten(g) if flat else g


def hvp(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
        v: torch.Tensor | Mapping[str, torch.Tensor],
        params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor | Params:
    """The Hessian-vector product ∇²L(w) v of L(w) = loss_fn(f(x; w), y).

    Computed forward-over-reverse, ∇²L(w) v = d/dt ∇L(w + t v)|_{t=0}, with
    :func:`torch.func.jvp` over :func:`torch.func.grad`: the cost of a few gradient
    evaluations and memory O(P), the Hessian (P × P) is never formed. (For many products
    at one point, :class:`nnopt.curvature.HessianOperator` reuses the work that does not
    depend on v.)

    Parameters
    ----------
    model
        The network f; its parameters are not changed.
    loss_fn
        ``loss_fn(outputs, targets)`` returning a scalar tensor.
    x, y
        Inputs (first dimension: examples) and targets, on one device.
    v
        The direction: a flat vector of length P (then a flat vector is returned) or a
        dict shaped like the parameters (then a dict is returned).
    params
        The point w, a parameter dict (default: detached copies of the module's parameters).
    """
    model, p = _resolve(model, params)
    loss_fn = _check_loss_fn(loss_fn)
    _check_data(x, y, p)
    is_flat = isinstance(v, torch.Tensor)
    if is_flat:
        check_tensor(v, "v", shape=(num_params(p),))
        check_same_dtype(v=v, params=next(iter(p.values())))  # type: ignore[arg-type]
        _check_on_params_device(p, v=v)  # type: ignore[arg-type]
        vd = unflatten(v, p)  # type: ignore[arg-type]
    else:
        vd = _check_like(v, p, "v")
    grad_fn = torch.func.grad(_loss_of(model, loss_fn, x, y))
    out = torch.func.jvp(grad_fn, (p,), (vd,))[1]
    return flatten(out) if is_flat else out


def jvp(model: nn.Module, x: torch.Tensor, v: torch.Tensor | Mapping[str, torch.Tensor],
        params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """J v: the change of the outputs f(x; w) along the parameter direction v (J = ∂f/∂w).

    ``v`` is a flat vector of length P or a parameter-shaped dict; the result has the
    shape of f(x; w).
    """
    model, p = _resolve(model, params)
    _check_on_params_device(p, x=check_tensor(x, "x"))
    if isinstance(v, torch.Tensor):
        _check_on_params_device(p, v=check_tensor(v, "v", shape=(num_params(p),)))
        vd = unflatten(v, p)
    else:
        vd = _check_like(v, p, "v")
    out = torch.func.jvp(lambda q: torch.func.functional_call(model, q, (x,)), (p,), (vd,))[1]
    return out


def vjp(model: nn.Module, x: torch.Tensor, u: torch.Tensor,
        params: Mapping[str, torch.Tensor] | None = None, *,
        flat: bool = True) -> torch.Tensor | Params:
    """Jᵀ u: the parameter direction whose output change pairs with ``u`` (J = ∂f/∂w).

    ``u`` has the shape of f(x; w); the result is a flat vector of length P (or a
    parameter dict if ``flat=False``).
    """
    model, p = _resolve(model, params)
    _check_on_params_device(p, x=check_tensor(x, "x"))
    out, pullback = torch.func.vjp(  # type: ignore[misc]
        lambda q: torch.func.functional_call(model, q, (x,)), p)
    check_tensor(u, "u", shape=tuple(out.shape))
    check_same_device(u=u, x=x)
    (g,) = pullback(u.to(dtype=out.dtype))
    return flatten(g) if flat else g
