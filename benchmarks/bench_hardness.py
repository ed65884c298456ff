#!/usr/bin/env python3
"""SUBSET-SUM ground truth: dynamic programming vs brute force (chapter 4).

Both exact solvers of :mod:`nnopt.hardness` decide the same random instances; the brute force
enumerates all 2ⁿ subset sums, the dynamic program keeps the reachable sums ≤ t as a bitset
(O(n·t) bit operations). For several n it times a yes-instance (the sum of a random subset) and
a no-instance (the largest unreachable target below the total: the DP's bitset then spans
almost every sum, its worst case at that size), prints the median wall time of each solver over
repeats and their ratio, and checks that the two solvers agree on the answer and on the gap.

Target (issue 6): at n = 22 with weights in [1, 1000] the DP is at least 10× faster than brute
force (median over repeats, same run), on the yes- and on the no-instance. Exits 1 when missed. Run:

    python benchmarks/bench_hardness.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from nnopt.hardness import subset_sum_brute_force, subset_sum_dp

TARGET_N = 22
TARGET_RATIO = 10.0


def instance(n: int, seed: int) -> tuple[list[int], int, int]:
    """Weights in [1, 1000], a yes-target (a random subset's sum) and a no-target.

    The no-target is the largest t < Σ a that no subset reaches, found with the DP and
    confirmed by brute force in :func:`main`.
    """
    rng = np.random.default_rng(seed)
    a = [int(v) for v in rng.integers(1, 1001, size=n)]
    yes = int(np.sum(np.array(a)[rng.random(n) < 0.5]))
    for no in range(sum(a) - 1, 0, -1):
        if not subset_sum_dp(a, no).feasible:
            return a, yes, no
    raise ValueError(f"every target in [0, {sum(a)}] is a subset sum of a (n = {n}, seed = {seed})")


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"{'n':>3} {'answer':>6} {'brute force [ms]':>17} {'DP [ms]':>9} {'ratio':>8}  agree")
    at_target = []
    for n in (10, 14, 18, TARGET_N):
        a, yes, no = instance(n, seed=n)
        for t, expected in ((yes, True), (no, False)):
            bf_result = subset_sum_brute_force(a, t)
            dp_result = subset_sum_dp(a, t)
            agree = (bf_result.feasible == dp_result.feasible == expected
                     and bf_result.closest_gap == dp_result.closest_gap)
            if not agree:
                print(f"n={n}, t={t}: the solvers disagree or the instance is not a "
                      f"{'yes' if expected else 'no'}-instance", file=sys.stderr)
                return 1
            bf = median_time(lambda: subset_sum_brute_force(a, t), args.repeats)
            dp = median_time(lambda: subset_sum_dp(a, t), args.repeats)
            ratio = bf / dp
            print(f"{n:>3} {'yes' if expected else 'no':>6} {1e3 * bf:>17.2f} {1e3 * dp:>9.3f} "
                  f"{ratio:>8.1f}  {agree}")
            if n == TARGET_N:
                at_target.append(ratio)
    ok = len(at_target) == 2 and min(at_target) >= TARGET_RATIO
    print(f"target: DP >= {TARGET_RATIO:.0f}x faster at n = {TARGET_N} (yes and no): "
          f"{'met' if ok else 'MISSED'} ({at_target[0]:.1f}x and {at_target[1]:.1f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
