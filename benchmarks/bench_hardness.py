#!/usr/bin/env python3
"""SUBSET-SUM ground truth: dynamic programming vs brute force (chapter 4).

Both exact solvers of :mod:`nnopt.hardness` decide the same random instances; the brute force
enumerates all 2ⁿ subset sums, the dynamic program keeps the reachable sums ≤ t as a bitset
(O(n·t) bit operations). Prints the median wall time of each over repeats and their ratio, for
several n, and checks the answers agree.

Target (issue 6): at n = 22 with weights in [1, 1000] the DP is at least 10× faster than brute
force (median over repeats, same run). Exits 1 when missed. Run:

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


def instance(n: int, seed: int) -> tuple[list[int], int]:
    rng = np.random.default_rng(seed)
    a = [int(v) for v in rng.integers(1, 1001, size=n)]
    t = int(np.sum(np.array(a)[rng.random(n) < 0.5]))  # a yes-instance by construction
    if seed % 2:  # every other instance: a target between two subset sums is likely a no
        t += 1
    return a, t


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
    print(f"{'n':>3} {'brute force [ms]':>17} {'DP [ms]':>9} {'ratio':>8}  answers agree")
    ratio_at_target = None
    for n in (10, 14, 18, TARGET_N):
        a, t = instance(n, seed=n)
        bf_result = subset_sum_brute_force(a, t)
        dp_result = subset_sum_dp(a, t)
        agree = (bf_result.feasible == dp_result.feasible
                 and bf_result.closest_gap == dp_result.closest_gap)
        if not agree:
            print(f"n={n}: solvers disagree", file=sys.stderr)
            return 1
        bf = median_time(lambda: subset_sum_brute_force(a, t), args.repeats)
        dp = median_time(lambda: subset_sum_dp(a, t), args.repeats)
        ratio = bf / dp
        print(f"{n:>3} {1e3 * bf:>17.2f} {1e3 * dp:>9.3f} {ratio:>8.1f}  {agree}")
        if n == TARGET_N:
            ratio_at_target = ratio
    ok = ratio_at_target is not None and ratio_at_target >= TARGET_RATIO
    print(f"target: DP >= {TARGET_RATIO:.0f}x faster at n = {TARGET_N}: "
          f"{'met' if ok else 'MISSED'} ({ratio_at_target:.1f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
