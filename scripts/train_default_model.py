"""Train the bundled default model and record how it was made and what it reached.

Re-run it to reproduce or improve the model that ships in the package:

    python scripts/train_default_model.py --minutes 45 [--device auto] [--seed 0]

It trains the `small` U-Net on domain-randomised simulated frames (napari_ccdseg.randomise), scores
it on simulated frames never used for training — a realistic single-amplifier detector at read
noise 0.16, 1.6 and 3 e⁻, and a multi-amplifier detector with a different pixel size, thickness,
gain and pedestal than any training frame — next to the `physical` threshold preset, then writes
``src/napari_ccdseg/models/default.safetensors`` and its card ``default.json`` (config, seed,
figures) atomically, and ``docs/default-model.md`` from the card
(``--docs-only`` rewrites that page from the existing card without training).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from napari_ccdseg.atomic import atomic_path, atomic_write_text
from napari_ccdseg.bundled import BUNDLED_DIR, DEFAULT_MODEL
from napari_ccdseg.console import TrainProgressPrinter
from napari_ccdseg.dataset import LabelledFrame
from napari_ccdseg.metrics import Evaluation, agreement_summary, compare_clusters
from napari_ccdseg.modelfile import load_model
from napari_ccdseg.randomise import DomainRanges, randomised_frames
from napari_ccdseg.scoring import model_labeller, predict_and_evaluate, preset_labeller
from napari_ccdseg.simulate import AmplifierLayout, SimConfig, frame_seed, simulate_ccd, simulate_frame
from napari_ccdseg.train import TrainConfig, train

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "default-model.md"
NOISE_LEVELS_E = (0.16, 1.6, 3.0)
TEST_FRAMES = 4
TEST_SEED = 900_000

HELD_OUT = SimConfig(
    rows=512, cols=512, prescan_cols=8, overscan_cols=32, overscan_rows=8, units="adu",
    pedestal_adu=1000.0, gain_adu_per_e=5.0, dark_current_e=0.01, few_electron_rate=30.0,
    serial_trail_rate=1.0, cti_trail=0.05, glitch_rate=0.5,
)
"""Realistic single-amplifier frames; noise (and drift, quantisation with it) set per level."""

OTHER_DETECTOR = SimConfig(
    rows=512, cols=512, pixel_size_um=24.0, thickness_um=250.0, prescan_cols=4, overscan_cols=48,
    overscan_rows=12, units="adu", pedestal_adu=50000.0, gain_adu_per_e=80.0, read_noise_e=0.5,
    dark_current_e=0.02, pedestal_drift_e=0.25, cti_trail=0.1, quantisation_step=1.0,
    cluster_rate=150.0, few_electron_rate=50.0, serial_trail_rate=2.0, glitch_rate=1.0,
)
"""A detector unlike any training frame: 24 µm pixels, 250 µm thick (training: 15 µm, 300–675 µm),
gain 80 ADU/e⁻ and pedestal 50 000 ADU (training: ≤ 50 and ≤ 30 000), read as 4 amplifiers, one dead."""
OTHER_LAYOUT = AmplifierLayout(amplifiers=4, dead=(3,))
OTHER_CCDS = 2


def held_out_config(noise_e: float) -> SimConfig:
    noise_adu = noise_e * HELD_OUT.gain_adu_per_e
    return dataclasses.replace(
        HELD_OUT, read_noise_e=noise_e, pedestal_drift_e=0.3 * noise_e, quantisation_step=noise_adu / 4
    )


def _scores(evaluation: Evaluation) -> dict:
    cluster, clusters = evaluation.pixel.cluster, evaluation.clusters
    return {
        "cluster_f1": round(cluster.f1, 4),
        "cluster_precision": round(cluster.precision, 4),
        "cluster_recall": round(cluster.recall, 4),
        "macro_f1": round(evaluation.pixel.macro.f1, 4),
        "detection_efficiency": round(clusters.efficiency, 4),
        "fakes_per_megapixel": round(clusters.fakes_per_megapixel, 2),
        "true_clusters": clusters.n_true,
    }


def score(model, meta, frames: list[LabelledFrame]) -> dict:
    """U-Net and `physical` preset against truth, and against each other, on the same frames."""
    labels: dict[str, list] = {"unet": [], "physical": []}
    unet = predict_and_evaluate(frames, model_labeller(model, meta), on_frame=lambda _, pred: labels["unet"].append(pred))
    physical = predict_and_evaluate(
        frames, preset_labeller("physical"), on_frame=lambda _, pred: labels["physical"].append(pred)
    )
    agree = [compare_clusters(pred, phys) for pred, phys in zip(labels["unet"], labels["physical"])]
    total = agreement_summary([(frame.name, a) for frame, a in zip(frames, agree)])["total"]
    return {
        "frames": len(frames),
        "unet": _scores(unet),
        "physical": _scores(physical),
        "agreement_with_physical": {
            **{key: total[key] for key in ("both", "only_model", "only_physical")},
            "agreement": round(total["agreement"], 4),
        },
    }


def test_sets() -> dict[str, list[LabelledFrame]]:
    sets = {}
    for k, noise in enumerate(NOISE_LEVELS_E):
        config = held_out_config(noise)
        sims = [simulate_frame(config, frame_seed(TEST_SEED + k, i)) for i in range(TEST_FRAMES)]
        sets[f"held-out detector, {noise} e⁻"] = [
            LabelledFrame(f"noise{noise}_{i}", s.image, s.labels, s.instances) for i, s in enumerate(sims)
        ]
    other = []
    for ccd in range(OTHER_CCDS):
        for amp in simulate_ccd(OTHER_DETECTOR, frame_seed(TEST_SEED + 99, ccd), OTHER_LAYOUT):
            name = f"other_{ccd}[{amp.metadata['amplifier']['name']}]"
            other.append(LabelledFrame(name, amp.image, amp.labels, amp.instances))
    sets["other detector (4 amps, 1 dead), 0.5 e⁻"] = other
    return sets


def table(figures: dict) -> str:
    lines = [
        "| test set | method | cluster F1 | precision | recall | detection eff. | fakes/MPix | agreement with physical |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in figures.items():
        for method in ("unet", "physical"):
            s = result[method]
            agreement = result["agreement_with_physical"]["agreement"] if method == "unet" else ""
            lines.append(
                f"| {name} | {method} | {s['cluster_f1']:.3f} | {s['cluster_precision']:.3f} | "
                f"{s['cluster_recall']:.3f} | {s['detection_efficiency']:.3f} | {s['fakes_per_megapixel']:.1f} | {agreement} |"
            )
    return "\n".join(lines)


def _ranges_text(ranges: dict) -> str:
    """The domain-randomisation ranges of the card, as a sentence."""
    def span(key: str) -> str:
        lo, hi = ranges[key]
        return f"{lo:g}–{hi:g}"

    return (
        f"read noise {span('log_read_noise_e')} e⁻, gain {span('log_gain_adu_per_e')} ADU/e⁻, pedestal "
        f"{span('pedestal_adu')} ADU, row drift up to {ranges['drift_sigma'][1]:g} σ, dark current "
        f"{span('log_dark_current_e')} e⁻/px, cluster/track/trail/few-electron/glitch rates, defect densities, "
        f"CTI, quantisation, overscan, {ranges['dead_probability']:.0%} dead amplifiers"
    )


def write_docs(card: dict, path: Path = DOCS_PAGE) -> Path:
    """The user-facing page about the default model, from its card: what it is and what it reached."""
    training = card["training"]
    held_out = card["test_sets"]["held_out"]
    other = card["test_sets"]["other_detector"]
    text = f"""# The bundled default model

Generated from `src/napari_ccdseg/models/default.json` by `scripts/train_default_model.py`; do not edit by hand.

`ccdseg predict default FRAME… --out DIR` and the Predict widget (model field left empty) use this model, so
frames can be segmented right after installing. It is the `small` U-Net (481,796 parameters, 1.9 MB), trained on {card["training_frames"]["n"]} simulated frames of
{card["training_frames"]["size"]}² pixels, each from its own randomly drawn detector (domain randomisation,
`napari_ccdseg.randomise`: {_ranges_text(card["training_frames"]["ranges"])}). Trained by `{card["trained_by"]}` on {card["date"]}: {training["machine"]},
{training["minutes_total"]} min in all, {training["epochs_run"]} epochs, best epoch {training["best_epoch"]}
(validation cluster F1 {training["best_val_cluster_f1"]}), seed {card["seed"]}.

Re-run the script to retrain it (change `--minutes`, `--frames`, `--seed`); it rewrites the model, its card
and this page.

## How it does on frames it never saw

Truth is exact (simulated). **Held-out detector**: {held_out["frames_per_noise_level"]} frames of
{held_out["rows"]}×{held_out["cols"]} active pixels per read-noise level, in ADU (gain {held_out["gain_adu_per_e"]},
pedestal {held_out["pedestal_adu"]}), with row drift, CTI, serial-register trails, few-electron hits, glitches,
quantisation and overscan. **Other detector**: {other["ccds"]} CCDs of 4 amplifiers (one dead) with
{other["pixel_size_um"]} µm pixels, {other["thickness_um"]} µm thick, gain {other["gain_adu_per_e"]} ADU/e⁻,
pedestal {other["pedestal_adu"]} ADU — pixel size, thickness, gain and pedestal all outside the training ranges.
The `physical` preset (thresholds in units of σ) runs on the same frames.

{table(card["figures"])}

- *cluster F1*: pixel-level, cluster class; truth calls a pixel cluster when it got ≥ 1 e⁻ from an event,
  so at 1.6–3 e⁻ noise many true cluster pixels sit below the noise and no method can reach F1 = 1.
- *detection eff.*: share of true clusters with ≥ 50 % of their pixels predicted cluster;
  *fakes/MPix*: predicted clusters matching no true cluster, per megapixel.
- *agreement with physical*: clusters both found / clusters either found (`ccdseg evaluate --against physical`
  reports the same on your own, unlabelled frames).
"""
    atomic_write_text(path, text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=45.0, help="training time budget")
    parser.add_argument("--frames", type=int, default=800, help="domain-randomised training frames")
    parser.add_argument("--size", type=int, default=256, help="training frame side, px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR, help="folder for default.safetensors and default.json")
    parser.add_argument("--docs", type=Path, default=DOCS_PAGE, help="page written from the card")
    parser.add_argument("--docs-only", action="store_true", help="rewrite the page from the existing card, no training")
    args = parser.parse_args(argv)
    if args.docs_only:
        card = json.loads((args.out / f"{DEFAULT_MODEL}.json").read_text())
        print(f"wrote {write_docs(card, args.docs)}")
        return 0

    started = time.monotonic()
    frames = randomised_frames(args.frames, args.seed, rows=args.size, cols=args.size)
    config = TrainConfig(
        architecture="small", epochs=100_000, max_minutes=args.minutes, early_stopping=100_000,
        plateau_patience=12, max_val_tiles=128, device=args.device, seed=args.seed,
    )
    with tempfile.TemporaryDirectory() as work:
        result = train(
            frames, Path(work) / "default.safetensors", config, progress=TrainProgressPrinter(),
            metadata={"label_preset": "simulation truth (domain-randomised frames)"},
        )
        model, meta = load_model(result.model_path, "cpu")
        figures = {name: score(model, meta, test) for name, test in test_sets().items()}
        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out / f"{DEFAULT_MODEL}.safetensors") as tmp:
            shutil.copyfile(result.model_path, tmp)
    best = result.history[result.best_epoch - 1]
    card = {
        "description": "small U-Net trained on domain-randomised simulated frames (any noise, gain, pedestal)",
        "trained_by": "python scripts/train_default_model.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seed": args.seed,
        "training_frames": {"n": args.frames, "size": args.size, "ranges": dataclasses.asdict(DomainRanges())},
        "train_config": dataclasses.asdict(config),
        "training": {
            "device": result.device, "epochs_run": len(result.history), "best_epoch": result.best_epoch,
            "stopped": result.stopped, "best_val_cluster_f1": round(best["val_f1_cluster"], 4),
            "minutes_total": round((time.monotonic() - started) / 60, 1),
            "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        },
        "test_sets": {
            "held_out": {**dataclasses.asdict(HELD_OUT), "frames_per_noise_level": TEST_FRAMES, "seed": TEST_SEED},
            "other_detector": {**dataclasses.asdict(OTHER_DETECTOR), "layout": dataclasses.asdict(OTHER_LAYOUT), "ccds": OTHER_CCDS},
        },
        "figures": figures,
    }
    atomic_write_text(args.out / f"{DEFAULT_MODEL}.json", json.dumps(card, indent=1, default=str) + "\n")
    print(table(figures))
    print(f"wrote {args.out / (DEFAULT_MODEL + '.safetensors')}, its card {DEFAULT_MODEL}.json and {write_docs(card, args.docs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
