"""Figures of docs/particles.md: one simulated cluster of each type, the confusion matrices of the
bundled classifier and of the hand cuts on held-out frames, and the depth fit against the truth.

    python docs/make_particles_figure.py [--quick]

Writes docs/images/particles-types.png, particles-confusion.png and particles-depth.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_particles  # noqa: E402  (held-out sets and scoring: one definition)

from napari_ccdseg import particles  # noqa: E402
from napari_ccdseg.atomic import atomic_path  # noqa: E402
from napari_ccdseg.simulate import simulate_frame  # noqa: E402

IMAGES = ROOT / "docs" / "images"
STAMP = 48


def _save(figure: Figure, name: str) -> Path:
    path = IMAGES / name
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    print(f"wrote {path}")
    return path


def _example(kind: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """A stamp (e⁻) around a typical found cluster of ``kind`` in held-out 0.16 e⁻ frames, its mask and row."""
    config = bench_particles.held_out_sets()["0.16 e⁻"]
    for seed in range(40):
        frame = simulate_frame(config, bench_particles.EVAL_SEED + 90_000 + seed)
        table, electrons, found = particles.simulated_clusters(frame)
        chosen = table[(table["kind"] == kind) & (table["merged"] == 1)]
        if kind == "point":
            chosen = chosen[chosen["energy_kev"] > 3]
        if len(chosen):
            # a median cluster of its kind; for electrons a long one (short ones are compact blobs)
            order = chosen.sort_values("length_px" if kind == "electron" else "charge_e")
            row = order.iloc[(4 * len(order)) // 5 if kind == "electron" else len(order) // 2]
            ys, xs = np.nonzero(found == row.name)
            cy, cx = int(ys.mean()), int(xs.mean())
            half = max(STAMP // 2, (max(np.ptp(ys), np.ptp(xs)) + 8) // 2)
            top, left = max(cy - half, 0), max(cx - half, 0)
            window = (slice(top, cy + half), slice(left, cx + half))
            return electrons[window], found[window] == row.name, row.to_dict()
    raise RuntimeError(f"no {kind} cluster in 40 frames")


def types_figure() -> Path:
    """One panel per type, each in e⁻ on a log-like colour scale, with its charge and shape numbers."""
    figure = Figure(figsize=(15, 9), layout="constrained")
    axes = figure.subplots(2, 3)
    for ax, kind in zip(axes.ravel(), particles.PARTICLE_TYPES):
        stamp, mask, row = _example(kind)
        shown = np.arcsinh(np.clip(stamp, 0, None))
        image = ax.imshow(shown, cmap="magma", origin="lower", interpolation="nearest")
        ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.6)
        ax.set_title(f"{kind}: {row['charge_e']:.0f} e⁻ ({row['charge_e'] * 3.75e-3:.3g} keV), "
                     f"{row['npix']:.0f} px\nlength {row['length_px']:.1f} px, std_t {row['std_t']:.2f} px",
                     fontsize=11)
        ax.set_xlabel("column [px]")
        ax.set_ylabel("row [px]")
        figure.colorbar(image, ax=ax, label="arcsinh(charge / e⁻)", shrink=0.8)
    figure.suptitle("Simulated clusters of each type (0.16 e⁻ read noise; cyan: found cluster outline)")
    return _save(figure, "particles-types.png")


def confusion_figure(results: dict[str, dict]) -> Path:
    """Row-normalised confusion matrices: learned model (top) and hand cuts (bottom) per held-out set."""
    names = list(results)
    figure = Figure(figsize=(4.2 * len(names), 9), layout="constrained")
    axes = figure.subplots(2, len(names))
    for col, name in enumerate(names):
        for row, method in enumerate(("learned", "hand cuts")):
            confusion = results[name][method]["confusion"]
            counts = confusion.to_numpy(np.float64)
            totals = counts.sum(axis=1, keepdims=True)
            shares = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
            ax = axes[row, col]
            ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
            for i in range(counts.shape[0]):
                for j in range(counts.shape[1]):
                    if counts[i, j]:
                        ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                                color="white" if shares[i, j] > 0.6 else "black")
            ax.set_xticks(range(counts.shape[1]), confusion.columns, rotation=60, fontsize=8)
            ax.set_yticks(range(counts.shape[0]), confusion.index, fontsize=8)
            ax.set_title(f"{name}, {method}\naccuracy {results[name][method]['accuracy']:.3f}", fontsize=10)
            if col == 0:
                ax.set_ylabel("true kind")
            if row == 1:
                ax.set_xlabel("predicted type")
    figure.suptitle("Held-out simulated clusters: counts, colour = share of the true kind")
    return _save(figure, "particles-confusion.png")


def depth_figure(frames: int) -> Path:
    """Fitted vs true depth of detected single points at 0.16 e⁻, and the RMS error per energy bin."""
    config = bench_particles.held_out_sets()["0.16 e⁻"]
    rows = []
    for i in range(frames):
        frame = simulate_frame(config, bench_particles.EVAL_SEED + 50_000 + i)
        table, electrons, found = particles.simulated_clusters(frame)
        points = table[(table["kind"] == "point") & (table["merged"] == 1)]
        fit = particles.point_depths(electrons, found, points.index.to_numpy(),
                                     diffusion=bench_particles.diffusion_of(config))
        rows.append(pd.DataFrame({"energy": points["energy_kev"].to_numpy(), "true": points["depth_um"].to_numpy(),
                                  "fit": fit["depth_um"].to_numpy(), "err": fit["depth_err_um"].to_numpy()}))
    data = pd.concat(rows)
    table = bench_particles.depth_table(config, frames)
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    left, right = figure.subplots(1, 2)
    bright = data["energy"] >= 1
    for sel, colour, label in ((~bright, "0.7", "< 1 keV"), (bright, "C0", "≥ 1 keV")):
        below = np.minimum(data["err"][sel], data["fit"][sel])  # depths stop at the front surface
        left.errorbar(data["true"][sel], data["fit"][sel], yerr=[below, data["err"][sel]], fmt=".", ms=3, color=colour,
                      elinewidth=0.5, alpha=0.7, label=label)
    left.plot([0, config.thickness_um], [0, config.thickness_um], "k--", lw=1, label="fit = truth")
    left.set_xlabel("true depth z [µm]")
    left.set_ylabel("fitted depth [µm] (± fit error)")
    left.set_title("Depth from the fitted spread, σ² = −A ln(1 − b z)")
    left.legend()
    bins = table.iloc[:-1]
    x = np.arange(len(bins))
    right.bar(x - 0.2, bins["rms_um"], 0.4, label="RMS error")
    right.bar(x + 0.2, bins["median_quoted_err_um"], 0.4, label="median quoted error")
    right.axhline(75, color="C3", ls="--", label="goal ≥ 1 keV: 75 µm")
    right.set_xticks(x, [f"{e}\n({n} pts)" for e, n in zip(bins["energy_kev"], bins["points"])])
    right.set_xlabel("point energy [keV]")
    right.set_ylabel("depth error [µm]")
    right.set_title(f"≥ 1 keV: RMS {table.iloc[-1]['rms_um']:.0f} µm ({table.iloc[-1]['points']} points)")
    right.legend()
    figure.suptitle(f"Point depths, 0.16 e⁻ read noise, {config.thickness_um:.0f} µm CCD, {frames} held-out frames")
    return _save(figure, "particles-depth.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 frames per set instead of 12")
    args = parser.parse_args()
    frames = 2 if args.quick else 12
    types_figure()
    results = {name: bench_particles.score(bench_particles.held_out_clusters(config, frames), None)
               for name, config in bench_particles.held_out_sets().items()}
    confusion_figure(results)
    depth_figure(frames)


if __name__ == "__main__":
    main()
