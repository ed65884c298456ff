"""Argument validation shared by every public ``nnopt`` function.

Each helper raises :class:`TypeError` (wrong kind of object or dtype) or
:class:`ValueError` (right kind, wrong value: shape, sign, non-finite entries,
devices) with a message that names the argument and states what was expected,
so that a reader who passes a bad input learns what to change.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

__all__ = [
    "check_tensor",
    "check_class_indices",
    "check_same_device",
    "check_same_device_if_tensors",
    "check_same_dtype",
    "check_positive",
    "check_int",
    "check_probability",
    "check_choice",
    "check_real",
    "check_callable",
    "all_finite",
]


def _describe_shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def check_tensor(
    value: object,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | None] | None = None,
    floating: bool = True,
    finite: bool = True,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Check that ``value`` is a tensor fit to be the argument ``name``.

    Parameters
    ----------
    ndim
        Allowed number of dimensions (an int or a collection of ints).
    shape
        Expected shape; ``None`` entries match any size.
    floating
        Require a floating-point dtype (integer and boolean tensors are refused,
        since every computation in ``nnopt`` is differentiable).
    finite
        Require every entry to be finite (no NaN or infinity). Tensors on the ``meta``
        device carry no data and are not checked.
    dtype
        Require exactly this dtype.

    Returns
    -------
    torch.Tensor
        ``value`` itself, so calls can be chained.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(
                f"{name} must have {want} dimension(s), got shape {tuple(value.shape)}"
            )
    if shape is not None:
        if value.ndim != len(shape) or any(
            s is not None and s != v for s, v in zip(shape, value.shape)
        ):
            raise ValueError(
                f"{name} must have shape {_describe_shape(shape)}, got {tuple(value.shape)}"
            )
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {value.dtype}")
    if floating and not value.is_floating_point():
        raise TypeError(
            f"{name} must have a floating-point dtype (float32 or float64), got {value.dtype}"
        )
    if finite and value.is_floating_point() and not value.is_meta and not all_finite(value):
        raise ValueError(f"{name} must contain only finite values (found NaN or infinity)")
    return value


def check_class_indices(labels: object, name: str, n: int, classes: int, *,
                        check_range: bool = True) -> torch.Tensor:
    """Check that ``labels`` holds one int64 class index in [0, classes) for each of n examples.

    The range test reads the smallest and largest label on the host (a device synchronisation
    on a GPU); ``check_range=False`` skips it.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.shape != (n,) or labels.dtype != torch.long:
        raise ValueError(f"{name} must be int64 class indices of shape ({n},), got {labels.dtype} "
                         f"of shape {tuple(labels.shape)}")
    if check_range and n and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(f"{name} must hold class indices in [0, {classes})")
    return labels


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of the floating tensor ``t`` is finite.

    A NaN or infinity anywhere makes the sum NaN or infinite, so a finite sum settles it in one
    reduction (10× faster than ``isfinite(t).all()`` on a vector of 5·10⁴ floats); a sum that
    is not finite (a NaN or infinity, or an overflow) is checked entry by entry.
    """
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    """Check that all named tensors live on one device and return it."""
    devices = {name: t.device for name, t in tensors.items()}
    unique = set(devices.values())
    if len(unique) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"arguments must be on the same device, got {listing}")
    return next(iter(unique))


def check_same_device_if_tensors(**values: object) -> None:
    """:func:`check_same_device` over those of the named values that are tensors.

    For arguments that may be a number or a tensor: numbers (and ``None``) live on no device
    and are skipped, so fewer than two tensors always pass.
    """
    tensors = {name: v for name, v in values.items() if isinstance(v, torch.Tensor)}
    if len(tensors) > 1:
        check_same_device(**tensors)


def check_same_dtype(**tensors: torch.Tensor) -> torch.dtype:
    """Check that all named tensors share one dtype and return it."""
    dtypes = {name: t.dtype for name, t in tensors.items()}
    unique = set(dtypes.values())
    if len(unique) > 1:
        listing = ", ".join(f"{n} is {d}" for n, d in dtypes.items())
        raise TypeError(f"arguments must have the same dtype, got {listing}")
    return next(iter(unique))


def _finite_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value}")
    return x


def check_real(value: object, name: str) -> float:
    """Check that ``value`` is a finite real number or a one-element real tensor; return it as a float."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be real, got a tensor of dtype {value.dtype}")
        value = value.detach().item()
    return _finite_real(value, name)


def check_callable(value: object, name: str, *, signature: str | None = None) -> None:
    """Check that ``value`` is callable; ``signature`` (e.g. ``"loss_fn(outputs, targets)"``) goes into the message."""
    if not callable(value):
        how = f" as {signature}" if signature else ""
        raise TypeError(f"{name} must be callable{how}, got {type(value).__name__}")


def check_positive(value: object, name: str, *, strict: bool = True) -> float:
    """Check that ``value`` is a finite real number, > 0 (or >= 0 if not ``strict``)."""
    x = _finite_real(value, name)
    if strict and x <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if not strict and x < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return x


def check_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """Check that ``value`` is an integer (not a bool), at least ``minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    n = int(value)
    if minimum is not None and n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return n


def check_probability(value: object, name: str, *, allow_zero: bool = False) -> float:
    """Check that ``value`` lies in (0, 1] (or [0, 1] with ``allow_zero``)."""
    p = check_positive(value, name, strict=not allow_zero)
    if p > 1:
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return p


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of the strings in ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value
