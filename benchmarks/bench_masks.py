"""Simulation check of the masks: the single-electron rate of the unmasked pixels against the injected dark current.

Run from the repository root: ``python benchmarks/bench_masks.py [--quick] [--seeds N] [--figure PATH]``.
For each injected dark current λ from 10⁻³ to 1 e⁻/pixel, ``seeds`` electron-resolving frames are
simulated in ADU (320 × 640 active pixels, prescan and overscan, gain 5 ADU/e⁻, read noise 0.15 e⁻;
point clusters, muons, electron tracks, hot pixels, segments and columns, amplifier glow and glowing
column bands), calibrated by ``calibrate_frame`` (class map's clusters, hot pixels and glowing
pixels left out, as ``ccdseg mask`` does) and masked with the class map from the simulator's
truth and from the ``physical`` auto-label preset. λ is then fitted (``masks.rates``) in the unmasked pixels, and in
the whole active area without masks. The markdown table gives, per λ, the inverse-variance mean over
the frames ± its error, the pull (mean − injected) / error, and the unmasked share of the active area.
Then the same for frames of the ``damic-m`` preset as it is, against the simulated λ of the rows
the unmasked pixels lie in, and the time ``build_mask`` takes on a 4096² frame.
``--quick``: 160 × 320 frames, one seed, three values of λ. ``--components N``: instead, at λ = 0.01
and 0.3, N frames each of the full frame and of frames with glow, events or hot defects switched
off in turn (truth class map): the mean pull and its error show whether any of them leaks.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from napari_ccdseg.autolabel import label_frame
from napari_ccdseg.calibrate import calibrate_frame
from napari_ccdseg.catalogue import CALIBRATION_EXCLUDED
from napari_ccdseg.errors import InputError
from napari_ccdseg.masks import MASK_BITS, MaskParams, active_region, build_mask, rates
from napari_ccdseg.simulate import SimConfig, simulate_frame

DARKS_E = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
QUICK_DARKS_E = (0.001, 0.03, 1.0)
BASE = SimConfig(
    rows=320, cols=640, prescan_cols=8, overscan_cols=32, overscan_rows=8, units="adu", pedestal_adu=-39.0,
    gain_adu_per_e=5.0, read_noise_e=0.15, cluster_rate=100.0, muon_rate=1.0, electron_track_rate=3.0,
    amp_glow_e=2.0, glow_band_probability=0.3, glow_band_position="random", hot_columns=(1.0, 2.0),
)
SOURCES = ("truth", "physical", "no mask")
COMPONENTS = {
    "full frame": {},
    "no glow": dict(amp_glow_e=0.0, glow_band_probability=0.0),
    "no clusters or tracks": dict(cluster_rate=0.0, muon_rate=0.0, electron_track_rate=0.0),
    "no hot pixels or columns": dict(hot_pixels=(0.0, 0.0), hot_segments=(0.0, 0.0), hot_columns=(0.0, 0.0)),
}
"""What the component check switches off (SimConfig changes)."""


@dataclasses.dataclass
class Measured:
    """λ ± error of each frame for one class-map source, and the unmasked share of the active area."""

    lam: list[float] = dataclasses.field(default_factory=list)
    err: list[float] = dataclasses.field(default_factory=list)
    share: list[float] = dataclasses.field(default_factory=list)

    def combined(self) -> tuple[float, float]:
        """Inverse-variance mean of the frames with a fitted λ, and its error."""
        pairs = [(v, e) for v, e in zip(self.lam, self.err) if math.isfinite(v) and e > 0]
        if not pairs:
            return math.nan, math.nan
        weights = np.array([1 / e**2 for _, e in pairs])
        values = np.array([v for v, _ in pairs])
        return float((weights * values).sum() / weights.sum()), float(weights.sum() ** -0.5)


def measure_frame(
    config: SimConfig, seed: int, results: dict[str, Measured], sources: tuple[str, ...] = SOURCES
) -> None:
    """Simulate, calibrate, mask and fit one frame; append to ``results`` per source."""
    sim = simulate_frame(config, seed)
    region = active_region(sim.image.shape, metadata=sim.metadata)
    (r0, r1), (c0, c1) = region
    active = np.zeros(sim.image.shape, dtype=bool)
    active[r0:r1, c0:c1] = True
    header = {"PRESCAN": config.prescan_cols, "OVERSCAN": config.overscan_cols, "OVERSCNR": config.overscan_rows}
    maps = {"truth": sim.labels}
    if "physical" in sources:
        maps["physical"] = label_frame(sim.image, "physical")
    calibrations = {}
    for source, labels in maps.items():
        try:
            calibrations[source] = calibrate_frame(sim.image, header=header, exclude=np.isin(labels, CALIBRATION_EXCLUDED))
        except InputError:
            calibrations[source] = None
    calibrations["no mask"] = calibrations["truth"]  # gain and pedestals only: the mask is the active area
    for source in sources:
        calibration = calibrations[source]
        if calibration is None:
            results[source].lam.append(math.nan)
            results[source].err.append(math.nan)
            results[source].share.append(math.nan)
            continue
        if source == "no mask":
            mask = np.where(active, 0, MASK_BITS["edge"]).astype(np.uint16)
        else:
            mask = build_mask(sim.image, maps[source], calibration, params=MaskParams(), region=region)
        result = rates(calibration.electrons(sim.image), mask, calibration)
        results[source].lam.append(result.ser_e_per_px)
        results[source].err.append(result.ser_err)
        results[source].share.append(result.unmasked_pixels / active.sum())


def _cell(lam: float, err: float, truth: float) -> tuple[str, str]:
    if not math.isfinite(lam):
        return "no fit", "–"
    return f"{lam:.4g} ± {err:.2g}", f"{(lam - truth) / err:+.1f}"


def plot_check(rows: list[tuple[float, dict[str, Measured]]], path: Path) -> Path:
    """Measured / injected λ against injected λ for each source, with 1σ bars."""
    import matplotlib

    from napari_ccdseg.report import _STYLE, DPI
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(9, 5.5), layout="constrained")
        axes = figure.add_subplot()
        styles = {"truth": ("o", "tab:blue"), "physical": ("s", "tab:green"), "no mask": ("^", "tab:red")}
        for offset, source in zip((0.96, 1.0, 1.04), SOURCES):
            darks, ratios, errors = [], [], []
            for dark, results in rows:
                lam, err = results[source].combined()
                if math.isfinite(lam):
                    darks.append(dark * offset)
                    ratios.append(lam / dark)
                    errors.append(err / dark)
            marker, colour = styles[source]
            label = {"truth": "masked, truth class map", "physical": "masked, physical preset",
                     "no mask": "no mask (active area)"}[source]
            axes.errorbar(darks, ratios, errors, fmt=marker, color=colour, label=label, capsize=3)
        axes.axhline(1, color="black", lw=0.8)
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("injected dark current λ [e⁻/pixel]")
        axes.set_ylabel("measured λ / injected λ")
        axes.set_title("Single-electron rate in the unmasked pixels (simulated frames)")
        axes.legend()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=DPI)
    return path


def components(seeds: int) -> None:
    """Mean pull ± its error (truth class map) with each source of leaking charge switched off in turn."""
    print(f"component check: {BASE.rows} × {BASE.cols} active pixels, {seeds} frames per cell, truth class map\n")
    print("| injected λ [e⁻/px] | frame | mean pull ± error | mean (measured − injected) [e⁻/px] |")
    print("|---|---|---|---|")
    for dark in (0.01, 0.3):
        for name, changes in COMPONENTS.items():
            results = {source: Measured() for source in SOURCES}
            for seed in range(seeds):
                measure_frame(dataclasses.replace(BASE, dark_current_e=dark, **changes), 100 + seed, results,
                              sources=("truth",))
            lam, err = np.array(results["truth"].lam), np.array(results["truth"].err)
            pulls = (lam - dark) / err
            print(f"| {dark:g} | {name} | {pulls.mean():+.2f} ± {pulls.std(ddof=1) / np.sqrt(pulls.size):.2f} | "
                  f"{(lam - dark).mean():+.2g} |", flush=True)


def time_mask(side: int) -> float:
    """Seconds ``build_mask`` takes on one side × side frame of the check's detector (truth class map)."""
    config = dataclasses.replace(BASE, rows=side, cols=side, dark_current_e=0.01)
    sim = simulate_frame(config, 0)
    calibration = calibrate_frame(sim.image, exclude=np.isin(sim.labels, CALIBRATION_EXCLUDED),
                                  header={"PRESCAN": config.prescan_cols, "OVERSCAN": config.overscan_cols,
                                          "OVERSCNR": config.overscan_rows})
    start = time.perf_counter()
    build_mask(sim.image, sim.labels, calibration, region=active_region(sim.image.shape, metadata=sim.metadata))
    return time.perf_counter() - start


def preset_check(seeds: int) -> None:
    """The damic-m preset as it is (dark current ramping along the rows, CTI, pedestal drift, fpack
    grid, few-electron hits, serial-register trails, glitches): masked λ against the simulated λ of
    the rows the unmasked pixels lie in."""
    from napari_ccdseg.simulate import SIM_PRESETS

    config = SIM_PRESETS["damic-m"]
    print(f"\ndamic-m preset ({config.rows} × {config.cols}, λ {config.dark_current_e} e⁻/px ramping by "
          f"±{config.dark_current_row_ramp:.2f} along the rows), {seeds} frames:\n")
    print("| class map | frames fitted | measured λ [e⁻/px] | simulated λ of the unmasked pixels | pull |")
    print("|---|---|---|---|---|")
    for source in ("truth", "physical"):
        measured, errors, truths = [], [], []
        for seed in range(seeds):
            sim = simulate_frame(config, seed)
            labels = sim.labels if source == "truth" else label_frame(sim.image, "physical")
            header = {"PRESCAN": config.prescan_cols, "OVERSCAN": config.overscan_cols, "OVERSCNR": config.overscan_rows}
            try:
                calibration = calibrate_frame(sim.image, header=header, exclude=np.isin(labels, CALIBRATION_EXCLUDED))
            except InputError:
                continue
            mask = build_mask(sim.image, labels, calibration, region=active_region(sim.image.shape, metadata=sim.metadata))
            result = rates(calibration.electrons(sim.image), mask, calibration)
            if not math.isfinite(result.ser_e_per_px):
                continue
            per_row = np.asarray(sim.metadata["dark_current_e_per_row"])
            measured.append(result.ser_e_per_px)
            errors.append(result.ser_err)
            truths.append(float(per_row[np.nonzero(mask == 0)[0]].mean()))
        if not measured:
            print(f"| {source} | 0 | – | – | – |")
            continue
        weights = 1 / np.square(errors)
        lam, err = float((weights * measured).sum() / weights.sum()), float(weights.sum() ** -0.5)
        truth = float((weights * truths).sum() / weights.sum())
        print(f"| {source} | {len(measured)} | {lam:.4g} ± {err:.2g} | {truth:.4g} | {(lam - truth) / err:+.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="160 × 320 frames, 1 seed, 3 values of λ")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--figure", type=Path, help="write the measured/injected figure here (PNG)")
    parser.add_argument("--components", type=int, metavar="N", help="the component check with N frames per cell")
    parser.add_argument("--time-side", type=int, default=4096, help="time build_mask on one frame this big (0: skip)")
    args = parser.parse_args()
    if args.components:
        components(args.components)
        return
    config = dataclasses.replace(BASE, rows=160, cols=320) if args.quick else BASE
    seeds = 1 if args.quick else args.seeds
    darks = QUICK_DARKS_E if args.quick else DARKS_E
    machine = platform.processor() or platform.machine()
    print(f"masks simulation check: {config.rows} × {config.cols} active pixels, {seeds} frame(s) per λ, "
          f"{os.cpu_count()} CPU(s), {machine}\n")
    print("| injected λ [e⁻/px] | frames with a fitted λ (truth, physical) | masked, truth map | pull | unmasked "
          "| masked, physical preset | pull | unmasked | no mask (active area) | pull | s/frame |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for dark in darks:
        results = {source: Measured() for source in SOURCES}
        start = time.perf_counter()
        for seed in range(seeds):
            measure_frame(dataclasses.replace(config, dark_current_e=dark), seed, results)
        seconds = (time.perf_counter() - start) / seeds
        fitted = [sum(math.isfinite(v) for v in results[source].lam) for source in ("truth", "physical")]
        cells = [f"{fitted[0]}, {fitted[1]} of {seeds}"]
        for source in SOURCES:
            cells += _cell(*results[source].combined(), dark)
            if source != "no mask":
                shares = [s for s in results[source].share if math.isfinite(s)]
                cells.append(f"{100 * np.mean(shares):.0f} %" if shares else "–")
        print(f"| {dark:g} | " + " | ".join(cells) + f" | {seconds:.1f} |", flush=True)
        rows.append((dark, results))
    preset_check(1 if args.quick else seeds)
    side = min(args.time_side, 1024) if args.quick else args.time_side
    if side:
        print(f"\nbuild_mask on a {side}² frame: {time_mask(side):.1f} s")
    if args.figure:
        print(f"\nfigure: {plot_check(rows, args.figure)}")


if __name__ == "__main__":
    main()
