"""Where and how experiments run: device choice, seeding, dtypes and problem scale.

The book runs on a laptop CPU by default. One switch scales every chapter up on a GPU:
set the environment variable ``NNOPT_SCALE=large`` before starting Jupyter (see the
README). Chapters ask :func:`scaled` for their sizes and :func:`default_device` for the
device, so no chapter ever names a device itself.

Dtype policy
------------
* Verification (comparisons against a closed form or a dense reference, where the
  claim is "agrees to 1e-10") runs in ``float64``: :data:`VERIFY_DTYPE`.
* Experiments (training networks, timing) run in ``float32``: :data:`EXPERIMENT_DTYPE`,
  the dtype a GPU is fast in.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch

from .validation import check_choice, check_int

__all__ = [
    "VERIFY_DTYPE",
    "EXPERIMENT_DTYPE",
    "SCALE_ENV_VAR",
    "default_device",
    "seed_everything",
    "make_generator",
    "scale",
    "scaled",
    "progress",
    "torch_threads",
]

#: dtype of verification against closed forms and dense references.
VERIFY_DTYPE = torch.float64
#: dtype of training experiments and timings.
EXPERIMENT_DTYPE = torch.float32
#: Name of the environment variable that scales experiments up (``NNOPT_SCALE=large``).
SCALE_ENV_VAR = "NNOPT_SCALE"
_SCALES = ("default", "large")

T = TypeVar("T")


def default_device() -> torch.device:
    """CUDA if a GPU is visible to torch, else the CPU.

    ``NNOPT_DEVICE`` (e.g. ``cpu``) overrides the choice, to force the CPU on a GPU machine.
    """
    forced = os.environ.get("NNOPT_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators (CPU and CUDA).

    Returns a fresh CPU :class:`torch.Generator` seeded with ``seed``, which is what
    ``nnopt``'s randomised functions take: they never draw from the global RNG silently.
    """
    seed = check_int(seed, "seed", minimum=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return make_generator(seed)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A :class:`torch.Generator` on ``device`` seeded with ``seed``."""
    seed = check_int(seed, "seed", minimum=0)
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def scale() -> str:
    """The experiment scale chosen by ``NNOPT_SCALE``: ``"default"`` (CPU) or ``"large"``."""
    value = os.environ.get(SCALE_ENV_VAR, "default").strip().lower() or "default"
    return check_choice(value, SCALE_ENV_VAR, _SCALES)


def scaled(default: T, large: T) -> T:
    """Return ``default`` at the default scale and ``large`` when ``NNOPT_SCALE=large``."""
    return large if scale() == "large" else default


def progress(iterable: Iterable[T], desc: str, *, total: int | None = None,
             enabled: bool | None = None) -> Iterable[T]:
    """``iterable`` with a text progress bar (tqdm, on stderr) at the large scale.

    At the default scale a chapter runs in about a minute and ``iterable`` comes back unchanged,
    so the stored outputs hold no bars; with ``NNOPT_SCALE=large`` some cells run for many
    minutes, and the bar says how far they are. ``enabled`` overrides the choice. ``total`` is
    the number of items when ``iterable`` has no ``len``.
    """
    if not isinstance(desc, str):
        raise TypeError(f"desc must be a str, got {type(desc).__name__}")
    if total is not None:
        total = check_int(total, "total", minimum=0)
    if enabled is None:
        enabled = scale() == "large"
    elif not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool or None, got {type(enabled).__name__}")
    if not enabled:
        return iterable
    from tqdm import tqdm  # the std (text) bar: no widget library needed in Jupyter

    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, mininterval=1.0,
                dynamic_ncols=False, ncols=90)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the enclosed block with ``n`` intra-op torch threads, then restore the previous count.

    Loops of thousands of tiny tensor operations (online SGD, small batched GD) run faster on
    one thread than on several, where the threading overhead exceeds the work per operation.
    """
    n = check_int(n, "n", minimum=1)
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
