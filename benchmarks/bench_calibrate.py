"""Calibration error (gain, read noise σ, dark current λ) against simulated truth, vs σ and λ.

Run from the repository root: ``python benchmarks/bench_calibrate.py [--quick] [--seeds N]``.
Each cell simulates ``seeds`` frames in ADU (gain 6 ADU/e⁻, the damic-m preset's readout: pedestal
drifting 1/6 e⁻ rms along the rows, fpack-like grid of 0.25 ADU; point clusters and tracks, no
defects), calibrates them with the true cluster pixels left out (as a class map leaves them out),
and prints a markdown table: how many frames resolved their peaks, the relative bias ± scatter
(standard deviation over seeds) of gain, σ and λ, the mean and spread of λ's pulls
(λ − truth)/error, and the time per frame. Then the damic-m preset as it is, without a class map
and with its true clusters left out, at 320 × 640 and at one 1536 × 6144 amplifier (time to
calibrate), and a 1536 × 3072 frame of the grid's physics for comparison. ``--quick``: 200 × 300
frames, 2 seeds, a sub-grid, the 320 × 640 preset once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time

import numpy as np

from napari_ccdseg.calibrate import calibrate_frame
from napari_ccdseg.classes import BACKGROUND
from napari_ccdseg.errors import InputError
from napari_ccdseg.simulate import SIM_PRESETS, SimConfig, simulate_frame

NOISES_E = (0.1, 0.2, 0.3, 0.4, 0.5)
DARKS_E = (0.001, 0.01, 0.1, 0.5, 1.0, 2.0)
GAIN = 6.0
BASE = SimConfig(
    units="adu", gain_adu_per_e=GAIN, pedestal_adu=-39.0, pedestal_drift_e=1 / 6, quantisation_step=0.25,
    cluster_rate=60.0, hot_pixels=(0.0, 0.0), hot_segments=(0.0, 0.0), hot_columns=(0.0, 0.0),
    glow_band_probability=0.0, amp_glow_e=0.0,
)


@dataclasses.dataclass
class Cell:
    noise: float
    dark: float
    resolved: int = 0
    frames: int = 0
    gain: list[float] = dataclasses.field(default_factory=list)
    sigma: list[float] = dataclasses.field(default_factory=list)
    lam: list[float] = dataclasses.field(default_factory=list)
    pull: list[float] = dataclasses.field(default_factory=list)
    seconds: list[float] = dataclasses.field(default_factory=list)


def run_cell(noise: float, dark: float, seeds: int, rows: int, cols: int) -> Cell:
    """Calibrate ``seeds`` frames of one (σ, λ) and collect relative errors and pulls."""
    cell = Cell(noise, dark)
    config = dataclasses.replace(BASE, rows=rows, cols=cols, read_noise_e=noise, dark_current_e=dark)
    for seed in range(seeds):
        sim = simulate_frame(config, seed)
        start = time.perf_counter()
        try:
            cal = calibrate_frame(sim.image, exclude=sim.labels != BACKGROUND)
        except InputError:
            cal = None
        cell.seconds.append(time.perf_counter() - start)
        cell.frames += 1
        if cal is None:
            continue
        cell.resolved += 1
        cell.gain.append(cal.gain_adu_per_e / GAIN - 1)
        cell.sigma.append(cal.noise_e / noise - 1)
        cell.lam.append(cal.dark_current_e_per_px / dark - 1)
        cell.pull.append((cal.dark_current_e_per_px - dark) / cal.dark_err)
    return cell


def _percent(values: list[float]) -> str:
    if not values:
        return "–"
    scatter = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{100 * statistics.fmean(values):+.2f} ± {100 * scatter:.2f}"


def _pulls(values: list[float]) -> str:
    if not values:
        return "–"
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):+.2f} / {spread:.2f}"


def table(cells: list[Cell]) -> str:
    lines = [
        "| σ (e⁻) | λ (e⁻/px) | resolved | gain bias ± scatter (%) | σ bias ± scatter (%) "
        "| λ bias ± scatter (%) | λ pull mean / sd | s per frame |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c.noise:g} | {c.dark:g} | {c.resolved}/{c.frames} | {_percent(c.gain)} | {_percent(c.sigma)} "
            f"| {_percent(c.lam)} | {_pulls(c.pull)} | {statistics.median(c.seconds):.2f} |"
        )
    return "\n".join(lines)


def preset_rows(sizes: list[tuple[int, int]], seeds: int, plain: tuple[int, int] | None) -> str:
    """The damic-m preset as it is (clusters, CTI, glow, hot columns, ramp 0.3 → 1.5 e⁻/px), calibrated
    without a class map and with its true clusters left out, at each size; then, for comparison, a
    ``plain`` frame of the benchmark's own physics (σ 0.16 e⁻, λ 0.9 e⁻/px): fit ± error, χ², time."""
    lines = [
        "| frame | class map | gain (truth 6) | σ e⁻ (truth 0.16) | λ e⁻/px (truth 0.9) | χ²/ndof | s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    runs = [(f"damic-m {rows} × {cols}", dataclasses.replace(SIM_PRESETS["damic-m"], rows=rows, cols=cols))
            for rows, cols in sizes]
    if plain is not None:
        runs.append((f"plain {plain[0]} × {plain[1]}", dataclasses.replace(
            BASE, rows=plain[0], cols=plain[1], read_noise_e=0.16, dark_current_e=0.9)))
    for name, config in runs:
        header = {"PRESCAN": config.prescan_cols, "OVERSCAN": config.overscan_cols, "OVERSCNR": config.overscan_rows}
        for seed in range(seeds if name.startswith("damic-m") else 1):
            sim = simulate_frame(config, seed)
            for class_map, exclude in (("none", None), ("truth", sim.labels != BACKGROUND)):
                start = time.perf_counter()
                cal = calibrate_frame(sim.image, header=header, exclude=exclude)
                seconds = time.perf_counter() - start
                lines.append(
                    f"| {name}, seed {seed} | {class_map} | {cal.gain_adu_per_e:.4f} ± {cal.gain_err:.4f} "
                    f"| {cal.noise_e:.5f} ± {cal.noise_err:.5f} "
                    f"| {cal.dark_current_e_per_px:.4f} ± {cal.dark_err:.4f} "
                    f"| {cal.fit['chi2']:.0f}/{cal.fit['ndof']} | {seconds:.1f} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 × 300 frames, 2 seeds, a sub-grid")
    parser.add_argument("--seeds", type=int, help="frames per cell (default 5, quick 2)")
    args = parser.parse_args()
    rows, cols = (200, 300) if args.quick else (400, 600)
    seeds = args.seeds or (2 if args.quick else 5)
    noises = (0.1, 0.3, 0.5) if args.quick else NOISES_E
    darks = (0.01, 0.5, 2.0) if args.quick else DARKS_E
    machine = platform.processor() or platform.machine()
    print(f"calibrate_frame on {rows} × {cols} ADU frames (gain {GAIN} ADU/e⁻, drift 1/6 e⁻ rms, 0.25 ADU grid), "
          f"{seeds} seed(s) per cell, {os.cpu_count()} CPU(s), {machine}\n")
    start = time.perf_counter()
    cells = [run_cell(noise, dark, seeds, rows, cols) for noise in noises for dark in darks]
    print(table(cells))
    sizes = [(320, 640)] if args.quick else [(320, 640), (1536, 6144)]
    print()
    print(preset_rows(sizes, 1 if args.quick else 2, None if args.quick else (1536, 3072)))
    print(f"\ntotal {time.perf_counter() - start:.0f} s; numpy {np.__version__}")


if __name__ == "__main__":
    main()
