"""Cluster catalogue: charge/energy bias and resolution against simulated truth, and its speed.

Run from the repository root: ``python benchmarks/bench_catalogue.py [--quick] [--accuracy-only]``. Prints markdown.

1. **Accuracy**: electron-resolving simulated frames in ADU (σ = 0.15 e⁻, gain 5 ADU/e⁻, dark current
   0.05 e⁻/px, the default mix of points, muons, electron tracks and defects), each calibrated from
   its own comb of electron peaks (background pixels of the class map), catalogued with three class maps: the truth labels, the
   ``physical`` preset and the bundled default model. Each true point cluster is matched to the
   catalogue cluster holding most of its pixels; catalogue clusters matched by two true ones
   (merged) are left out. Per bin of true energy: the share matched alone (found, not merged),
   and the median (bias) and
   1.4826·MAD (resolution) of charge_e / collected electrons − 1 and of energy_kev / deposited
   energy − 1 (the latter also holds the Fano spread and the simulator's 3.77 eV per pair against
   the catalogue's 3.75). The same on 6 ``damic-m`` preset frames (320 × 640, dark current rising
   0.3–1.5 e⁻/px along the rows, which the charge has taken off per row).
2. **Speed**: one 4-amplifier readout of 1536 rows × 6144 columns, stored as 4 FITS extensions of
   1536 × 1536 (one per amplifier, as multi-amplifier files come), the accuracy frames' physics;
   wall time of each stage of ``ccdseg catalogue`` with the bundled default model: read, predict,
   calibrate, table (electrons + cluster_table), write (instance TIFFs, CSV, Parquet, JSON,
   spectrum, summary). ``--quick`` uses 4 × 256²;
3. ``cluster_table`` alone on a 6144² frame (a full DAMIC-M-size CCD) with its ~20 000 clusters.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_ccdseg.autolabel import label_frame
from napari_ccdseg.calibrate import calibrate_frame
from napari_ccdseg.catalogue import (
    CALIBRATION_EXCLUDED, ClassMaps, catalogue_frame, cluster_table, write_catalogue_folder, write_instances,
)
from napari_ccdseg.io import Frame, output_stem, read_frames
from napari_ccdseg.simulate import SIM_PRESETS, AmplifierLayout, SimConfig, simulate_dataset, simulate_frame

ENERGY_EDGES_KEV = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0)
ACCURACY_CONFIG = SimConfig(
    rows=512, cols=512, units="adu", gain_adu_per_e=5.0, pedestal_adu=1000.0, read_noise_e=0.15,
    dark_current_e=0.05, cluster_rate=150.0,
)


def _match(truth: np.ndarray, catalogue: np.ndarray) -> dict[int, int]:
    """True id -> catalogue id holding most of its pixels, leaving out catalogue clusters two true ones share."""
    both = (truth > 0) & (catalogue > 0)
    pairs, counts = np.unique(
        np.stack([truth[both].astype(np.int64), catalogue[both].astype(np.int64)]), axis=1, return_counts=True
    )
    best: dict[int, tuple[int, int]] = {}
    for (t, c), n in zip(pairs.T.tolist(), counts.tolist()):
        if n > best.get(t, (0, -1))[1]:
            best[t] = (c, n)
    owners = np.bincount([c for c, _ in best.values()], minlength=int(catalogue.max()) + 1)
    return {t: c for t, (c, _) in best.items() if owners[c] == 1}


def accuracy(n_frames: int, config: SimConfig = ACCURACY_CONFIG, first_seed: int = 100) -> list[str]:
    """Markdown table: bias and resolution per energy bin and class-map source."""
    maps = ClassMaps(device="cpu")
    rows: dict[str, list[tuple[float, float, float, float]]] = {"truth": [], "physical": [], "default model": []}
    n_true: list[float] = []
    gains = []
    for seed in range(n_frames):
        sim = simulate_frame(config, seed=first_seed + seed)
        frame = Frame(sim.image, f"sim{seed}")
        sources = {
            "truth": sim.labels,
            "physical": label_frame(sim.image, "physical", name=frame.name),
            "default model": maps(frame, frame.name),
        }
        points = [c for c in sim.metadata["clusters"] if c["kind"] == "point"]
        n_true += [c["energy_kev"] for c in points]
        for name, labels in sources.items():  # each calibrated as ccdseg catalogue does, with its own class map
            result = catalogue_frame(frame, labels, allow_empty=True)
            table, instances = result.table, result.instances
            gains.append(result.calibration.gain_adu_per_e / config.gain_adu_per_e - 1)
            matched = _match(sim.instances, instances)
            for c in points:
                cid = matched.get(c["id"])
                if cid is not None:
                    row = table.iloc[cid - 1]
                    rows[name].append((c["energy_kev"], c["electrons"], row.charge_e, row.energy_kev, row.dark_e))
    lines = [
        f"{n_frames} frames of {config.rows} × {config.cols}, gain fitted within {100 * max(map(abs, gains)):.2f} % of the truth; "
        f"{len(n_true)} true point clusters",
        "",
        "| class map | true energy [keV] | true | alone | charge bias | charge resolution | energy bias | energy resolution "
        "| charge bias, dark current kept |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    true_energy = np.asarray(n_true)
    for name, entries in rows.items():
        data = np.asarray(entries, dtype=np.float64).reshape(-1, 5)
        for lo, hi in zip(ENERGY_EDGES_KEV[:-1], ENERGY_EDGES_KEV[1:]):
            in_bin = (data[:, 0] >= lo) & (data[:, 0] < hi)
            total = int(((true_energy >= lo) & (true_energy < hi)).sum())
            if not total:
                continue
            q = data[in_bin, 2] / data[in_bin, 1] - 1
            e = data[in_bin, 3] / data[in_bin, 0] - 1
            kept = (data[in_bin, 2] + data[in_bin, 4]) / data[in_bin, 1] - 1  # the charge before dark_e came off
            lines.append(
                f"| {name} | {lo:g}–{hi:g} | {total} | {in_bin.sum() / total:.0%} | {_pct(np.median(q))} "
                f"| {_pct(_robust_sigma(q), sign='')} | {_pct(np.median(e))} | {_pct(_robust_sigma(e), sign='')} "
                f"| {_pct(np.median(kept))} |"
            )
    return lines


def _robust_sigma(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if values.size else float("nan")


def _pct(value: float, sign: str = "+") -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:{sign}.1f} %"


def speed(side: int, amplifiers: int = 4) -> list[str]:
    """Markdown table: wall time per stage of cataloguing one multi-amplifier FITS file."""
    config = dataclasses.replace(ACCURACY_CONFIG, rows=side, cols=side)
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = simulate_dataset(Path(tmp) / "data", 1, config, seed=5, fmt="fits",
                                   layout=AmplifierLayout(amplifiers=amplifiers))
        start = time.perf_counter()
        maps = ClassMaps(device="cpu")
        load_s = time.perf_counter() - start
        # The first prediction of a frame this size in a process is several times slower than the
        # next ones (PyTorch/oneDNN warm-up): a one-off cost per run, timed apart
        start = time.perf_counter()
        maps(Frame(np.random.default_rng(0).normal(size=(side, side)).astype(np.float32), "warm-up"), "w")
        warm_s = time.perf_counter() - start
        stages = {stage: [0.0, 0.0] for stage in ("read", "predict", "calibrate", "table", "write")}
        clock = (time.perf_counter(), time.process_time())

        def lap(stage: str) -> None:  # wall and CPU seconds: CPU time shows the work when others share the cores
            nonlocal clock
            now = (time.perf_counter(), time.process_time())
            stages[stage][0] += now[0] - clock[0]
            stages[stage][1] += now[1] - clock[1]
            clock = now

        out = Path(tmp) / "catalogue"
        frames = read_frames(path)
        lap("read")
        tables, calibrations, pixels = [], [], []
        for frame in frames:
            stem = output_stem(path, frame.name, len(frames))
            labels = maps(frame, stem)
            lap("predict")
            exclude = np.isin(labels, CALIBRATION_EXCLUDED)
            calibration = calibrate_frame(frame.data, frame=path.name, hdu=frame.hdu, extname=frame.extname,
                                          header=frame.header, exclude=exclude)
            lap("calibrate")
            result = catalogue_frame(frame, labels, calibration=calibration, allow_empty=True)
            lap("table")
            write_instances(out / f"{stem}_clusters.tif", result.instances)
            tables.append(result.table)
            calibrations.append(calibration)
            pixels.append(frame.data.size)
            lap("write")
        write_catalogue_folder(out, tables, calibrations, pixels, source=maps.description)
        lap("write")
    wall, cpu = (sum(times[i] for times in stages.values()) for i in (0, 1))
    n_clusters = sum(len(t) for t in tables)
    methods = ", ".join(sorted({c.method for c in calibrations}))
    return [
        f"{amplifiers} amplifiers × {side}×{side} ({amplifiers * side * side / 1e6:.1f} MPix), {n_clusters} clusters, "
        f"calibration method {methods}; not counted (once per run): loading the model {load_s:.2f} s, the "
        f"first (warm-up) prediction of a {side}² frame {warm_s:.2f} s",
        "",
        "| seconds | " + " | ".join(stages) + " | total |",
        "|---|" + "---:|" * (len(stages) + 1),
        "| wall | " + " | ".join(f"{w:.2f}" for w, _ in stages.values()) + f" | **{wall:.2f}** |",
        "| CPU (process) | " + " | ".join(f"{c:.2f}" for _, c in stages.values()) + f" | {cpu:.2f} |",
    ]


def table_speed(side: int) -> list[str]:
    """One line: wall and CPU time of cluster_table on a side² frame with its true class map."""
    config = dataclasses.replace(ACCURACY_CONFIG, rows=side, cols=side)
    sim = simulate_frame(config, seed=9)
    electrons = (sim.image - np.float32(config.pedestal_adu)) / np.float32(config.gain_adu_per_e)
    del sim.image
    start, cpu = time.perf_counter(), time.process_time()
    table, _ = cluster_table(electrons, sim.labels, frame="big", hdu=0)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return [f"`cluster_table` on a {side}² frame ({len(table)} clusters, {int(table.npix.sum())} cluster pixels): "
            f"{wall:.2f} s wall, {cpu:.2f} s CPU"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small frames: a check that it runs, not numbers")
    parser.add_argument("--accuracy-only", action="store_true", help="the accuracy tables, not the speed")
    args = parser.parse_args()
    import torch

    print(f"bench_catalogue, {os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}, "
          f"torch threads {torch.get_num_threads()}{', quick' if args.quick else ''}\n")
    print("## Accuracy against simulated truth\n")
    side = 256 if args.quick else 512
    print("\n".join(accuracy(1 if args.quick else 6, dataclasses.replace(ACCURACY_CONFIG, rows=side, cols=side))))
    print("\n## Accuracy in heavy dark current (`damic-m` preset, 0.3–1.5 e⁻/px along the rows)\n")
    print("\n".join(accuracy(1 if args.quick else 6, SIM_PRESETS["damic-m"], first_seed=940_000)))
    if args.accuracy_only:
        return
    print("\n## Speed of `ccdseg catalogue` (bundled default model)\n")
    print("\n".join(speed(256 if args.quick else 1536)))
    print()
    print("\n".join(table_speed(512 if args.quick else 6144)))


if __name__ == "__main__":
    main()
