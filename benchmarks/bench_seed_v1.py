"""Models trained on balanced seed-v1 images, scored on balanced and on realistic seed-v1 frames.

Run from the repository root: ``python benchmarks/bench_seed_v1.py [--minutes 8] [--variants plain,bands,context] [--threads N]``.

Training: the original project's 60 images from ``../shared/data/seed-v1/train`` when present
(colour-rule labels, the seeded 48/12 split of docs/benchmarks.md), else 60 balanced frames from
:data:`napari_ccdseg.seedv1.BALANCED` drawn the same way. Tests: the 12 held-out balanced images
and ``--realistic`` frames from :data:`napari_ccdseg.seedv1.REALISTIC` (thin glowing strip at the
left edge, sparse hot pixels and clusters; seeds 920 000 + i, never trained on), both labelled by
the ``seed-v1`` colour rules as the original scored its test images. Per variant (``TrainConfig``
settings) and set: per-class pixel F1, cluster detection efficiency and fakes per MPix, and where
the fake cluster pixels on the realistic set lie (in the glowing strip or elsewhere).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_ccdseg.autolabel import label_frame
from napari_ccdseg.classes import CLASS_NAMES, CLUSTER, GLOWING
from napari_ccdseg.dataset import LabelledFrame, load_labelled
from napari_ccdseg.metrics import Sample, evaluate
from napari_ccdseg.modelfile import load_model
from napari_ccdseg.predict import predict_frame
from napari_ccdseg.seedv1 import BALANCED, REALISTIC, rendered_frames
from napari_ccdseg.train import TrainConfig, keeps_readout_axes, split_frames, train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "seed-v1" / "train"
REALISTIC_SEED = 920_000
BALANCED_SEED = 930_000
VARIANTS = {
    "plain": {"band_augment": 0.0, "hot_augment": 0.0},
    "bands": {"hot_augment": 0.0},
    "context": {},
}
"""Training settings per variant: ``plain`` as before (no band strips or hot-pixel pastes), ``bands``
band strips alone, ``context`` the defaults (both)."""


def colour_labelled(images: list[tuple[np.ndarray, object]], prefix: str) -> list[LabelledFrame]:
    return [
        LabelledFrame(f"{prefix}_{i:03d}", image, label_frame(image, "seed-v1")) for i, (image, _) in enumerate(images)
    ]


def realistic_frames(n: int) -> list[LabelledFrame]:
    """``n`` realistic seed-v1 frames (seeds REALISTIC_SEED + i) with their colour-rule labels."""
    return colour_labelled(rendered_frames(REALISTIC, n, REALISTIC_SEED), "realistic")


def balanced_images() -> tuple[str, list[LabelledFrame]]:
    if SHARED.is_dir():
        return "the original's 60 training images", load_labelled([SHARED], preset="seed-v1")
    return "60 simulated balanced frames (seedv1.BALANCED)", colour_labelled(rendered_frames(BALANCED, 60, BALANCED_SEED), "balanced")


def scores(model, meta, frames: list[LabelledFrame]) -> dict:
    """Per-class F1, cluster efficiency and fakes, and the share of fake cluster pixels in glowing truth."""
    predicted = [predict_frame(model, meta, f.image).labels for f in frames]
    evaluation = evaluate(Sample(None, f.labels, None, p, f.name) for f, p in zip(frames, predicted))
    truth, pred = np.concatenate([f.labels.ravel() for f in frames]), np.concatenate([p.ravel() for p in predicted])
    false_cluster = (pred == CLUSTER) & (truth != CLUSTER)
    return {
        **{f"f1_{name}": evaluation.pixel.classes[name].f1 for name in CLASS_NAMES},
        "f1_macro avg": evaluation.pixel.macro.f1,
        "efficiency": evaluation.clusters.efficiency,
        "fakes_per_mpix": evaluation.clusters.fakes_per_megapixel,
        "false_cluster_px": int(false_cluster.sum()),
        "false_cluster_in_glow": float((false_cluster & (truth == GLOWING)).sum() / max(false_cluster.sum(), 1)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--realistic", type=int, default=16, help="realistic test frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    source, frames = balanced_images()
    train_frames, held_out = split_frames(frames, 0.2, seed=0)
    realistic = realistic_frames(args.realistic)
    print(f"training on {len(train_frames)} of {source}; tests: {len(held_out)} balanced held out, "
          f"{len(realistic)} realistic; {torch.get_num_threads()} torch threads, budget {args.minutes} min")
    header = "| variant | test set | F1 background | F1 glowing | F1 hot pixel | F1 cluster | cluster efficiency | fakes / MPix | false cluster px in glowing |"
    rows = [header, "|" + "---|" * 9]
    for name in args.variants.split(","):
        config = TrainConfig(epochs=1000, early_stopping=1000, max_minutes=args.minutes, device="cpu", seed=args.seed,
                             keep_readout_axes=keeps_readout_axes("seed-v1"), **VARIANTS[name])  # as ccdseg train
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = train(train_frames, Path(tmp) / "seed.safetensors", config)
            seconds = time.perf_counter() - start
            model, meta = load_model(result.model_path, "cpu")
        print(f"{name}: {seconds:.0f} s, {len(result.history)} epochs, best {result.best_epoch}", flush=True)
        for set_name, test in (("balanced 48/12", held_out), ("realistic", realistic)):
            s = scores(model, meta, test)
            rows.append(f"| {name} | {set_name} | {s['f1_background']:.3f} | {s['f1_glowing']:.3f} | {s['f1_hot pixel']:.3f} | "
                        f"{s['f1_cluster']:.3f} | {s['efficiency']:.3f} | {s['fakes_per_mpix']:.0f} | "
                        f"{s['false_cluster_in_glow']:.2f} of {s['false_cluster_px']} |")
            print(rows[-1], flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
