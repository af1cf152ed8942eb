"""The `physical` preset and the bundled default model on damic-m frames: glowing share, cluster
efficiency, pixel precision/recall/F1 of the cluster class and fake clusters per MPix against the
simulator's truth, before and after frame_scale: the physical preset by its σ rules (before) and
its electron rules (after); the default model fed the median/MAD normalisation it was trained on
(what its file records) and fed frame_scale's (what a model trained from now on sees).

    python benchmarks/bench_damic_scale.py [--frames 4] [--quick] [--skip-model]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_ccdseg.autolabel import PhysicalParams, _label_physical, label_frame
from napari_ccdseg.classes import CLUSTER, GLOWING
from napari_ccdseg.metrics import match_clusters
from napari_ccdseg.simulate import SIM_PRESETS, simulate_frame


def _scores(labels, sim, active):
    truth = sim.labels[active] == CLUSTER
    pred = labels[active] == CLUSTER
    tp = np.count_nonzero(truth & pred)
    precision, recall = tp / max(pred.sum(), 1), tp / max(truth.sum(), 1)
    match = match_clusters(sim.instances, labels)
    big = match.sizes >= 10
    return {
        "glowing %": 100 * np.mean(labels[active] == GLOWING),
        "true glowing %": 100 * np.mean(sim.labels[active] == GLOWING),
        "precision": precision, "recall": recall, "F1": 2 * precision * recall / max(precision + recall, 1e-9),
        "eff ≥10px": float(match.found[big].mean()) if big.any() else float("nan"),
        "eff all": float(match.found.mean()),
        "fakes/MPix": match.n_fake / (active.sum() / 1e6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="2 frames")
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()
    frames = 2 if args.quick else args.frames
    config = SIM_PRESETS["damic-m"]
    methods = {
        "physical, σ rules (before)": lambda image, header: _label_physical(image.astype(np.float32),
                                                                             PhysicalParams()),
        "physical, electron rules (after)": lambda image, header: label_frame(image, "physical", header=header),
    }
    if not args.skip_model:
        from napari_ccdseg.bundled import resolve_model
        from napari_ccdseg.modelfile import load_model
        from napari_ccdseg.predict import predict_frame

        model, meta = load_model(resolve_model(None))
        framed = {**meta, "normalisation_params": {**meta["normalisation_params"], "scale": "frame"}}
        methods[f"default model, {meta['normalisation_params']['scale']} scale (as recorded)"] = (
            lambda image, header: predict_frame(model, meta, image).labels)
        methods["default model, frame scale"] = lambda image, header: predict_frame(model, framed, image).labels
    header = {"PRESCAN": config.prescan_cols, "OVERSCAN": config.overscan_cols, "OVERSCNR": config.overscan_rows}
    results = {name: [] for name in methods}
    for seed in range(100, 100 + frames):
        sim = simulate_frame(config, seed)
        active = np.zeros(sim.labels.shape, bool)
        active[: config.rows, config.prescan_cols : config.prescan_cols + config.cols] = True
        for name, method in methods.items():
            start = time.perf_counter()
            labels = method(sim.image, header)
            scores = _scores(labels, sim, active)
            scores["s"] = time.perf_counter() - start
            results[name].append(scores)
    print(f"damic-m preset, {frames} frames of {config.rows} x {config.cols} (seeds 100…), means")
    for name, rows in results.items():
        keys = rows[0].keys()
        print(f"  {name}: " + ", ".join(f"{k} {np.mean([r[k] for r in rows]):.3g}" for k in keys))


if __name__ == "__main__":
    main()
