"""Time ``simulate_frame`` on 512², 2048² and 4096² frames (target: 4096² in ≤ 5 s on 2 CPU cores).

Run from the repository root: ``python benchmarks/bench_simulate.py [--repeat N]``. Each size is
simulated N times with the default ("conventional") configuration and different seeds; the best
and the median wall time are printed with the number of clusters and electrons drawn.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time

from napari_ccdseg.simulate import SIM_PRESETS, simulate_frame

SIZES = (512, 2048, 4096)
TARGET_S = {4096: 5.0}


def time_size(side: int, repeat: int) -> tuple[list[float], int, int]:
    """Wall times of ``repeat`` simulations of a side × side frame, and the last frame's counts."""
    config = dataclasses.replace(SIM_PRESETS["conventional"], rows=side, cols=side)
    times = []
    for seed in range(repeat):
        start = time.perf_counter()
        frame = simulate_frame(config, seed=seed)
        times.append(time.perf_counter() - start)
    clusters = frame.metadata["clusters"]
    return times, len(clusters), sum(c["electrons"] for c in clusters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    machine = platform.processor() or platform.machine()
    print(f"simulate_frame, preset 'conventional', {os.cpu_count()} CPU(s), {machine}")
    print(f"{'frame':>11} {'best s':>7} {'median s':>9} {'clusters':>9} {'electrons':>11}  target")
    for side in SIZES:
        times, n_clusters, electrons = time_size(side, args.repeat)
        target = TARGET_S.get(side)
        verdict = "" if target is None else f"<= {target} s: {'ok' if min(times) <= target else 'MISSED'}"
        print(
            f"{side:>5}x{side:<5} {min(times):7.2f} {statistics.median(times):9.2f} "
            f"{n_clusters:9d} {electrons:11d}  {verdict}"
        )


if __name__ == "__main__":
    main()
