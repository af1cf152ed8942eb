"""Particle identification and depth on simulated clusters never used for training.

Held-out frames: a single-amplifier detector (gain 5 ADU/e⁻, seeds apart from training) at read
noise 0.16, 1.6 and 3 e⁻, and ADU frames of the ``damic-m`` and ``single-sample`` presets.
Clusters are found as a catalogue finds them (the ``physical`` threshold preset), each given the
kind of the simulated event holding most of its charge. Prints, per set, the confusion matrix
(true kind × predicted type) and per-type recall / precision of the bundled model and of the
hand-cut baseline, and the depth error of point-like clusters vs energy at 0.16 e⁻.

Usage: python benchmarks/bench_particles.py [--quick] [--docs] [--model PATH]
(--docs writes the tables into docs/particles.md)
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_ccdseg import particles
from napari_ccdseg.atomic import atomic_write_text
from napari_ccdseg.simulate import SIM_PRESETS, SimConfig, simulate_frame

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "particles.md"
EVAL_SEED = 7_000_000
"""Held-out seeds start here; training seeds stay below 1,000,000."""

HELD_OUT = SimConfig(
    rows=512, cols=512, prescan_cols=8, overscan_cols=32, overscan_rows=8, units="adu",
    pedestal_adu=1000.0, gain_adu_per_e=5.0, dark_current_e=0.01, few_electron_rate=30.0,
    serial_trail_rate=2.0, serial_trail_e=(2.0, 200.0), cti_trail=0.05, glitch_rate=0.5,
    muon_rate=3.0, electron_track_rate=6.0, alpha_rate=1.0, full_well_e=50_000.0,
)
"""A single-amplifier detector with more tracks, trails and alphas than a real frame holds, so
each type has enough clusters to score; the noise is set per set below."""


def held_out_sets() -> dict[str, SimConfig]:
    """Every evaluation set by name: three noise levels of HELD_OUT and two presets, in ADU."""
    sets = {f"{noise:g} e⁻": dataclasses.replace(HELD_OUT, read_noise_e=noise) for noise in (0.16, 1.6, 3.0)}
    sets["damic-m"] = SIM_PRESETS["damic-m"]
    sets["single-sample"] = SIM_PRESETS["single-sample"]
    return sets


def held_out_clusters(config: SimConfig, frames: int, offset: int = 0) -> pd.DataFrame:
    """Found clusters of ``frames`` held-out frames with their true kind (see particles.simulated_clusters)."""
    tables = []
    for i in range(frames):
        frame = simulate_frame(config, EVAL_SEED + offset + i)
        table, _, _ = particles.simulated_clusters(frame, "physical")
        tables.append(table.assign(frame=i))
    return pd.concat(tables)


def score(table: pd.DataFrame, model: particles.TreeEnsemble | None) -> dict:
    """Confusion matrices and accuracy of the model and of the hand cuts on clusters of a true kind."""
    known = table[~table["kind"].isin((particles.NO_KIND, particles.FRAGMENT))]
    learned, _ = particles.classify_features(known, model)
    cuts = particles.hand_cut_types(known)
    result = {}
    for name, predicted in (("learned", learned), ("hand cuts", cuts)):
        confusion = particles.particle_confusion(known["kind"], predicted)
        single = known["merged"].to_numpy() <= 1
        result[name] = {
            "confusion": confusion,
            "accuracy": particles.accuracy(confusion),
            "accuracy_unmerged": float(np.mean(predicted[single] == known["kind"].to_numpy()[single])),
            "scores": particles.type_scores(confusion),
        }
    for extra, key in ((particles.NO_KIND, "fakes"), (particles.FRAGMENT, "fragments")):
        types, _ = particles.classify_features(table[table["kind"] == extra], model)
        result[key] = pd.Series(types).value_counts().to_dict()
    result["merged"] = int((known["merged"] > 1).sum())
    result["clusters"] = len(known)
    return result


DEPTH_BINS_KEV = (0.05, 0.3, 1.0, 3.0, 10.0, 20.0)


def depth_table(config: SimConfig, frames: int, offset: int = 0) -> pd.DataFrame:
    """Depth error (fit − truth) of detected single point events by energy bin: RMS, bias, quoted error, pull."""
    rows = []
    for i in range(frames):
        frame = simulate_frame(config, EVAL_SEED + 50_000 + offset + i)
        table, electrons, found = particles.simulated_clusters(frame, "physical")
        points = table[(table["kind"] == "point") & (table["merged"] == 1)]
        depth = particles.point_depths(electrons, found, points.index.to_numpy(),
                                       diffusion=diffusion_of(config))
        rows.append(pd.DataFrame({"energy_kev": points["energy_kev"].to_numpy(), "true": points["depth_um"].to_numpy(),
                                  "fit": depth["depth_um"].to_numpy(), "err": depth["depth_err_um"].to_numpy()}))
    data = pd.concat(rows)
    bins = [(f"{lo:g}–{hi:g}", (data["energy_kev"] >= lo) & (data["energy_kev"] < hi))
            for lo, hi in zip(DEPTH_BINS_KEV[:-1], DEPTH_BINS_KEV[1:])]
    bins.append(("≥ 1", data["energy_kev"] >= 1.0))
    return pd.DataFrame([{"energy_kev": name, **_depth_errors(data[chosen])} for name, chosen in bins])


def _depth_errors(sel: pd.DataFrame) -> dict:
    """RMS, bias and 68 % quantile of |fit − truth|, median quoted error, and the robust width of
    the pulls (1.48·MAD: 1 when the quoted errors are right, blind to the few outliers); points
    whose stamp held too few pixels for a fit (depth NaN) are counted apart."""
    fitted = sel[np.isfinite(sel["fit"])]
    diff = fitted["fit"] - fitted["true"]
    pull = diff / np.maximum(fitted["err"], 1e-3)
    return {"points": len(sel), "no_fit": len(sel) - len(fitted),
            "rms_um": float(np.sqrt(np.mean(diff**2))), "bias_um": float(diff.mean()),
            "q68_um": float(np.quantile(np.abs(diff), 0.68)), "median_quoted_err_um": float(fitted["err"].median()),
            "pull_width": float(1.4826 * np.median(np.abs(pull - pull.median())))}


def diffusion_of(config: SimConfig) -> particles.Diffusion:
    """The diffusion model of a simulated detector (what a physicist enters for a real one)."""
    return particles.Diffusion(
        config.diffusion_a_um2, config.diffusion_b_per_um, config.thickness_um, config.pixel_size_um
    )


def score_table(results: dict[str, dict]) -> str:
    """Markdown: per set and method, accuracy, then recall / precision of each type."""
    types = particles.PARTICLE_TYPES
    lines = ["| set | method | clusters (merged) | accuracy | " + " | ".join(f"{t} R / P" for t in types) + " |",
             "|" + "---|" * (4 + len(types))]
    for name, r in results.items():
        for method in ("learned", "hand cuts"):
            scores = r[method]["scores"]
            cells = []
            for t in types:
                rec, prec, n = scores.loc[t, "recall"], scores.loc[t, "precision"], scores.loc[t, "clusters"]
                precision = "—" if np.isnan(prec) else f"{prec:.2f}"
                cells.append("—" if n == 0 else f"{rec:.2f} / {precision} ({n})")
            lines.append(f"| {name} | {method} | {r['clusters']} ({r['merged']}) | {r[method]['accuracy']:.3f} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_docs(path: Path, blocks: dict[str, str]) -> None:
    """Replace each ``<!-- bench_particles:NAME -->`` … ``<!-- /bench_particles:NAME -->`` block of a page."""
    text = path.read_text()
    for name, body in blocks.items():
        start, end = f"<!-- bench_particles:{name} -->", f"<!-- /bench_particles:{name} -->"
        if start not in text or end not in text:
            raise SystemExit(f"{path}: no {start} … {end} block")
        head, rest = text.split(start, 1)
        text = head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1]
    atomic_write_text(path, text)
    print(f"wrote {path}")


def markdown(table: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, floats to 1 decimal (pandas' to_markdown needs tabulate)."""
    cells = [[f"{v:.1f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 frames per set instead of 12")
    parser.add_argument("--docs", action="store_true", help="also write the tables into docs/particles.md")
    parser.add_argument("--model", default=None, help="particle model file (default: the bundled one)")
    args = parser.parse_args()
    frames = 2 if args.quick else 12
    model = particles.load_particle_model(args.model) if args.model else particles.bundled_particle_model()
    start = time.perf_counter()
    results = {}
    for name, config in held_out_sets().items():
        results[name] = score(held_out_clusters(config, frames), model)
        for method in ("learned", "hand cuts"):
            print(f"\n### {name}: {method}\n")
            print(particles.format_confusion(results[name][method]["confusion"]))
        print(f"\nfound clusters of no event, typed by the model: {results[name]['fakes']}")
        print(f"fragments of events found elsewhere, typed by the model: {results[name]['fragments']}")
    table = score_table(results)
    depth = markdown(depth_table(held_out_sets()["0.16 e⁻"], frames))
    print("\n" + table)
    print("\n### Depth of point-like clusters, 0.16 e⁻, 675 µm\n")
    print(depth)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    if args.docs:
        note = f"*{frames} held-out frames per set; R / P = recall / precision (clusters of that true kind).*"
        write_docs(DOCS_PAGE, {"results": table + "\n\n" + note, "depth": depth})


if __name__ == "__main__":
    main()
