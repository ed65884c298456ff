"""ADLER under DistributedDataParallel: 2 CPU processes, gloo, on 127.0.0.1.

Every rank must apply the same η, equal to that of one process on the concatenated batch:
the optimizer all-reduces the gradient and then the scalar numerator GᵀG and denominator
uᵀ∇²𝓛u (never per-rank η's, whose average would be a different number).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nnopt.optim import ADLER

WORLD = 2
STEPS = 3
N_PER_RANK = 6
KINDS = ("cross_entropy", "mse")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _batches(kind: str):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS):
        x = torch.randn(WORLD * N_PER_RANK, 4, generator=g, dtype=torch.float64)
        if kind == "mse":
            y = torch.randn(WORLD * N_PER_RANK, 3, generator=g, dtype=torch.float64)
        else:
            y = torch.randint(0, 3, (WORLD * N_PER_RANK,), generator=g)
        out.append((x, y))
    return out


def _run(model, opt, batches, rank=None):
    lrs, etas, losses = [], [], []
    for x, y in batches:
        if rank is not None:
            sl = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
            x, y = x[sl], y[sl]
        losses.append(opt.step(x, y).clone())
        lrs.append(opt.param_groups[0]["lr"].clone())
        etas.append(opt.state[opt.param_groups[0]["params"][0]]["eta"].clone())
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return {"lr": torch.stack(lrs), "eta": torch.stack(etas), "loss": torch.stack(losses),
            "params": params}


def _worker(rank: int, port: int, outdir: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        for kind in KINDS:  # one pair of processes serves both losses: spawning is the slow part
            model = _model()
            ddp = nn.parallel.DistributedDataParallel(model)
            opt = ADLER(ddp, kind)
            result = _run(model, opt, _batches(kind), rank)
            torch.save(result, os.path.join(outdir, f"{kind}_rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(outdir)), nprocs=WORLD, join=True)
    return outdir


@pytest.mark.parametrize("kind", KINDS)
def test_ddp_matches_one_process_on_concatenated_batch(kind, ddp_results):
    r0 = torch.load(ddp_results / f"{kind}_rank0.pt")
    r1 = torch.load(ddp_results / f"{kind}_rank1.pt")
    model = _model()
    single = _run(model, ADLER(model, kind), _batches(kind))
    for key in ("lr", "eta", "loss", "params"):
        # the ranks agree exactly: they apply the same all-reduced scalars
        assert torch.equal(r0[key], r1[key]), key
        # and they agree with one process up to the order of floating-point sums
        assert torch.allclose(r0[key], single[key], rtol=1e-10, atol=1e-13), key
    # averaging per-rank η's instead would give a visibly different step size
    m2 = _model()
    x, y = _batches(kind)[0]
    from nnopt.optim import adler_step_size

    per_rank = [adler_step_size(m2, kind, x[r * N_PER_RANK:(r + 1) * N_PER_RANK],
                                y[r * N_PER_RANK:(r + 1) * N_PER_RANK]) for r in range(WORLD)]
    assert not torch.allclose(torch.stack(per_rank).mean(), single["eta"][0], rtol=1e-6)
