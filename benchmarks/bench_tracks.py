"""Whole objects, one class: how a model labels the pixels of long curly tracks on single-sample frames.

Run from the repository root: ``python benchmarks/bench_tracks.py [--model default] [--frames 4]``.

Frames: the ``single-sample`` preset (raw ADU, ~90 ADU noise, 2 e⁻ read noise, CTI, trails, glitches)
at 512², with many long electron tracks (12 per 512², 200–1000 keV: 0.4–2.6 mm of curly track)
and fewer point clusters, seeds 940 000 + i (never trained on). The same frames simulated without
read noise give each pixel's charge. Per kind of true cluster:

- *one class*: of the track's pixels the model marks at all (not background), the share it calls
  cluster — a track cut into cluster, hot-pixel and glowing pieces scores low;
- *visible*: of the track's pixels holding ≥ 3σ, the share called cluster;
- *whole tracks*: share of clusters whose marked pixels are ≥ 98 % cluster.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from napari_ccdseg.bundled import resolve_model
from napari_ccdseg.classes import BACKGROUND, CLASS_NAMES, CLUSTER
from napari_ccdseg.modelfile import load_model
from napari_ccdseg.predict import predict_frame
from napari_ccdseg.simulate import SIM_PRESETS, frame_seed, simulate_frame

SEED = 940_000
CURLY = dataclasses.replace(
    SIM_PRESETS["single-sample"], rows=512, cols=512, electron_track_rate=12.0,
    electron_energy_kev=(200.0, 1000.0), cluster_rate=20.0,
)
KINDS = ("electron", "muon", "trail", "point")
WHOLE = 0.98


def track_table(model, meta, n_frames: int) -> list[dict]:
    """One row per kind of true cluster: pixel counts per predicted class and the three shares."""
    counts = {kind: {"marked": np.zeros(4, int), "visible": np.zeros(4, int), "whole": 0, "n": 0} for kind in KINDS}
    for i in range(n_frames):
        seed = frame_seed(SEED, i)
        frame = simulate_frame(CURLY, seed)
        clean = simulate_frame(dataclasses.replace(CURLY, read_noise_e=0.0, glitch_rate=0.0), seed)
        charge = (clean.image - CURLY.pedestal_adu) / CURLY.gain_adu_per_e
        labels = predict_frame(model, meta, frame.image).labels
        kinds = np.array(["none"] + [c["kind"] for c in frame.metadata["clusters"]])
        for index, kind in enumerate(kinds[1:], start=1):
            if kind not in counts:
                continue
            inside = frame.instances == index
            predicted = labels[inside]
            marked = predicted[predicted != BACKGROUND]
            entry = counts[kind]
            entry["marked"] += np.bincount(marked, minlength=4)
            entry["visible"] += np.bincount(predicted[charge[inside] >= 3 * CURLY.read_noise_e], minlength=4)
            if len(marked):
                entry["n"] += 1
                entry["whole"] += (marked == CLUSTER).mean() >= WHOLE
    rows = []
    for kind, entry in counts.items():
        marked, visible = entry["marked"], entry["visible"]
        rows.append({
            "kind": kind,
            "marked_pixels": int(marked.sum()),
            "one_class": marked[CLUSTER] / max(marked.sum(), 1),
            "marked_as": {CLASS_NAMES[c]: int(marked[c]) for c in range(1, 4)},
            "visible_called_cluster": visible[CLUSTER] / max(visible.sum(), 1),
            "whole_share": entry["whole"] / max(entry["n"], 1),
            "clusters": entry["n"],
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args(argv)
    model, meta = load_model(resolve_model(args.model), "cpu")
    print("| kind | clusters | marked pixels | one class (share cluster) | marked glowing / hot / cluster | "
          "≥ 3σ pixels called cluster | tracks ≥ 98 % one class |")
    print("|---|---|---|---|---|---|---|")
    for row in track_table(model, meta, args.frames):
        as_ = row["marked_as"]
        print(f"| {row['kind']} | {row['clusters']} | {row['marked_pixels']} | {row['one_class']:.4f} | "
              f"{as_['glowing']} / {as_['hot pixel']} / {as_['cluster']} | {row['visible_called_cluster']:.4f} | "
              f"{row['whole_share']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
