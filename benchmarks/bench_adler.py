"""Cost of one ADLER step against one plain SGD step (issue 7, Balboni §7.6–7.7).

MLP 784-512-512-10 with ReLU, cross-entropy, batch 128, float32, 2 CPU threads. Both
optimizers run on the same model and batch in the same process; the two are timed in
interleaved rounds and the script prints the medians and their ratio. Exits non-zero when
the ratio exceeds the issue's target of 2.0 (the aim is 1.7).

    python benchmarks/bench_adler.py [--rounds 30] [--steps 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
from torch import nn

from nnopt.optim import ADLER, OuterProductLR

TARGET = 2.0
AIM = 1.7


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 10))


def sgd_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def time_steps(fn, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed round")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 784, generator=g)
    y = torch.randint(0, 10, (128,), generator=g)

    m_sgd, m_adler, m_op = make_model(1), make_model(1), make_model(1)
    sgd = torch.optim.SGD(m_sgd.parameters(), lr=1e-3)
    adler = ADLER(m_adler, "cross_entropy")
    outer = OuterProductLR(m_op, "cross_entropy")
    runs = {
        "sgd": lambda: sgd_step(m_sgd, sgd, x, y),
        "adler": lambda: adler.step(x, y),
        "outer_product": lambda: outer.step(x, y),
    }
    # every round restarts from the same weights (outside the timed region): repeated steps on
    # one fixed batch would otherwise drive the weights to overflow after a few hundred steps
    init = {id(m): copy.deepcopy(m.state_dict()) for m in (m_sgd, m_adler, m_op)}
    models = {"sgd": m_sgd, "adler": m_adler, "outer_product": m_op}
    for fn in runs.values():  # warm-up
        time_steps(fn, 3)
    times = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, fn in runs.items():
            models[k].load_state_dict(init[id(models[k])])
            times[k].append(time_steps(fn, args.steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"threads={torch.get_num_threads()} rounds={args.rounds} steps/round={args.steps}")
    for k, v in med.items():
        print(f"{k:>14}: median {1e3 * v:8.3f} ms/step")
    ratio = med["adler"] / med["sgd"]
    ratio_op = med["outer_product"] / med["sgd"]
    print(f"ratio ADLER/SGD = {ratio:.3f} (target <= {TARGET}, aim <= {AIM})")
    print(f"ratio outer-product/SGD = {ratio_op:.3f}")
    if ratio > TARGET:
        print("FAIL: ADLER step costs more than the target", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
