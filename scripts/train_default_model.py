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

After training it fits the model's decision rule (``napari_ccdseg.decision``): per-class logit offsets
that undo the class-weighted loss's over-calling of clusters, fitted on domain-randomised validation
frames no training run uses (seed ``VALIDATION_SEED``, the training ranges), plus the smallest cluster kept, and stores
them in the model file; ``--calibrate-only`` does this for the existing bundled model (weights
unchanged) and updates its card and page.
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
from napari_ccdseg.bundled import BUNDLED_DIR, DEFAULT_MODEL, resolve_model
from napari_ccdseg.console import TrainProgressPrinter
from napari_ccdseg.dataset import LabelledFrame
from napari_ccdseg.framescale import DENSE_DARK_E
from napari_ccdseg.decision import DECISION_KEY, fit_model_offsets
from napari_ccdseg.metrics import Evaluation, agreement_summary, compare_clusters
from napari_ccdseg.modelfile import load_model, save_model
from napari_ccdseg.randomise import DomainRanges, randomised_frames
from napari_ccdseg.scoring import model_labeller, predict_and_evaluate, preset_labeller
from napari_ccdseg.simulate import AmplifierLayout, SimConfig, frame_seed, simulate_ccd, simulate_frame
from napari_ccdseg.train import TrainConfig, train

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "default-model.md"
NOISE_LEVELS_E = (0.16, 1.6, 3.0)
TEST_FRAMES = 4
TEST_SEED = 900_000
VALIDATION_SEED = 700_000
"""Seed of the domain-randomised frames the decision rule is fitted on (training uses 0 and 1)."""
VALIDATION_FRAMES = 16
MIN_CLUSTER_PIXELS = 3
"""Predicted clusters of 1–2 px are dropped: on held-out frames nearly all of them are fakes (noise,
dark current, hot pixels and glitches; benchmarks/bench_boundary.py), and no cluster of ≥ 10 px is
lost; true clusters of 1–2 px are, the price of ≤ 10 fakes/MPix at skipper noise."""
HALO_POSTERIOR = 0.9
"""On frames that resolve electrons, background pixels next to a point-like cluster join it when they hold
some of its fitted profile's charge with at least this probability (``decision.grow_halos``): under
~1 e⁻/px of dark current it adds recall +0.013 and detection of clusters ≥ 10 px +0.012 at precision
−0.006 (docs/benchmarks.md section 16); lower posteriors buy more recall with precision under 0.95."""

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


def calibrate(model_path: Path, ranges: DomainRanges) -> dict:
    """Fit the decision rule of the model at ``model_path`` on frames drawn from the ``ranges`` it
    was trained on (the offsets undo a bias of its training) and store it there (weights
    unchanged), with the normalisation counting dark current as noise on electron-counting frames
    (a model trained without it reads their dark current as glow); returns the rule's metadata entry."""
    model, meta = load_model(model_path, "cpu")
    meta["normalisation_params"]["dark_as_noise"] = True  # models trained before it: see docs/benchmarks.md section 11
    frames = randomised_frames(VALIDATION_FRAMES, VALIDATION_SEED, ranges=ranges)
    fit = fit_model_offsets(model, meta, frames)
    meta[DECISION_KEY] = fit.to_metadata(
        f"{len(frames)} 256² frames from the model's training ranges, seed {VALIDATION_SEED}", MIN_CLUSTER_PIXELS,
        zero_electron_veto=True, halo_posterior=HALO_POSTERIOR,
    )
    save_model(model_path, model, meta)
    return meta[DECISION_KEY]


def _bench_boundary():
    """benchmarks/bench_boundary.py as a module: its test sets, measures and table."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_boundary", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_boundary.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


def boundary_figures(model_path: Path) -> dict:
    """Mask-boundary and fake-cluster figures (benchmarks/bench_boundary.py, its test sets)
    of the plain argmax and of the stored decision rule."""
    bench = _bench_boundary()
    model, meta = load_model(model_path, "cpu")
    rule = bench.DecisionRule.from_metadata(meta)
    rules = {"argmax": bench.DecisionRule(), "decision rule": rule}
    results = bench.measure(model, meta, bench.test_sets(quick=False), rules)
    return {name: {r: bench.summary(t) for r, t in per_rule.items()} for name, per_rule in results.items()}


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


def _decision_text(card: dict) -> str:
    """The page's section on the decision rule, when the card records one."""
    decision = card.get("decision")
    if decision is None:
        return ""
    offsets = ", ".join(f"{name} {value:+.2f}" for name, value in zip(("background", "glowing", "hot pixel", "cluster"), decision["logit_offsets"]))
    return f"""
## Decision rule: tight masks, fewer fakes

The network was trained with class-weighted cross-entropy, so the plain argmax of its logits over-calls
the rare classes: cluster masks come out about a pixel wider than the clusters and lone noise pixels
become fake clusters. The model file therefore carries a decision rule (`napari_ccdseg.decision`), which
`ccdseg predict`, the widgets and batch prediction all apply: logit offsets ({offsets}), fitted to
maximise the mean pixel F1 of the classes on {decision["fitted_on"]} (macro F1 {decision["score_before"]}
→ {decision["score_after"]}){_veto_text(decision)}, then predicted clusters smaller than {decision["min_cluster_pixels"]} px
are given their best other class{_halo_text(decision)}. The table (from `benchmarks/bench_boundary.py`'s test frames, seeds
unused by training and fitting) compares the plain argmax and the rule; *width bias*: predicted minus true
pixels per one-to-one matched cluster, and as an equivalent diameter; *ring*: cluster precision and recall
on each true cluster's edge pixels and the one-pixel ring outside it.

{_bench_boundary().boundary_table(card["boundary"])}
{_plain_argmax_text(card)}"""


def _normalisation_text(card: dict) -> str:
    """The page's paragraph on the input normalisation, when the card records it."""
    params = card.get("normalisation")
    if params is None:
        return ""
    scale = {"robust": "the median and MAD", "frame": "`framescale.frame_scale`"}[params["scale"]]
    dark = (
        " On a frame that resolves single electrons and holds more than"
        f" {DENSE_DARK_E:g} e⁻/px of dark current (the `damic-m` preset, warm module-test skipper images), each row is"
        " instead taken above its mean background in units of its background spread √(σ² + λ)"
        " (`dark_as_noise`, docs/benchmarks.md section 11): there the network sees dark current as noise,"
        " as on a conventional frame, and not as glow."
        if params.get("dark_as_noise") else ""
    )
    return f"""
## Input normalisation

Pixels in units of the read noise above each row's pedestal, taken from {scale}, compressed beyond
±{params["clip"]:g} σ.{dark}
"""


def _veto_text(decision: dict) -> str:
    """The rule's zero-electron veto, when it has one, as a clause."""
    if not decision.get("zero_electron_veto"):
        return ""
    return (
        "; on frames that resolve single electrons, cluster pixels reading less than half an electron above"
        " their row's zero-electron peak are given their best other class (an empty pixel holds no event's"
        " charge)"
    )


def _halo_text(decision: dict) -> str:
    """The rule's halo growth, when it has one, as a clause."""
    if not decision.get("halo_posterior"):
        return ""
    return (
        "; last, on frames that resolve single electrons, each point-like cluster's diffusion profile is fitted and"
        " a background pixel next to it joins it when its electron count holds some of that profile's charge with"
        f" probability ≥ {decision['halo_posterior']:g} (dark current alone being the other explanation)"
    )


def _plain_argmax_text(card: dict) -> str:
    """The first table's figures with the plain argmax, kept in the card when a rule was added later."""
    if "figures_plain_argmax" not in card:
        return ""
    return f"""
The figures of the first table are with the decision rule; with the plain argmax they were:

{table(card["figures_plain_argmax"])}
"""


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
`napari_ccdseg.randomise`: {_ranges_text(card["training_frames"]["ranges"])}). Trained by `{card["trained_by"]}` on {card["date"]}{_fine_tuned_text(card)}: {training["machine"]},
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
{_normalisation_text(card)}{_decision_text(card)}"""
    atomic_write_text(path, text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=45.0, help="training time budget")
    parser.add_argument("--frames", type=int, default=800, help="domain-randomised training frames")
    parser.add_argument("--size", type=int, default=256, help="training frame side, px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--init", help="fine-tune this model file or bundled model ('default') instead of fresh weights")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR, help="folder for default.safetensors and default.json")
    parser.add_argument("--docs", type=Path, default=DOCS_PAGE, help="page written from the card")
    parser.add_argument("--docs-only", action="store_true", help="rewrite the page from the existing card, no training")
    parser.add_argument(
        "--calibrate-only", action="store_true", help="fit and store the decision rule of the existing model, no training"
    )
    args = parser.parse_args(argv)
    if args.init:
        args.init = resolve_model(args.init)
    if args.docs_only:
        card = json.loads((args.out / f"{DEFAULT_MODEL}.json").read_text())
        print(f"wrote {write_docs(card, args.docs)}")
        return 0
    if args.calibrate_only:
        return recalibrate(args.out, args.docs)

    started = time.monotonic()
    frames = randomised_frames(args.frames, args.seed, rows=args.size, cols=args.size)
    config = TrainConfig(
        architecture="small", epochs=100_000, max_minutes=args.minutes, early_stopping=100_000,
        plateau_patience=12, max_val_tiles=128, device=args.device, seed=args.seed, learning_rate=args.learning_rate,
    )
    with tempfile.TemporaryDirectory() as work:
        result = train(
            frames, Path(work) / "default.safetensors", config, progress=TrainProgressPrinter(), init_model=args.init,
            metadata={"label_preset": "simulation truth (domain-randomised frames)"},
        )
        decision = calibrate(result.model_path, DomainRanges())
        boundary = boundary_figures(result.model_path)
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
        **({"fine_tuned_from": _base_text(args.init)} if args.init else {}),
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
        "normalisation": meta["normalisation_params"],
        "decision": decision,
        "boundary": boundary,
    }
    atomic_write_text(args.out / f"{DEFAULT_MODEL}.json", json.dumps(card, indent=1, default=str) + "\n")
    print(table(figures))
    print(f"wrote {args.out / (DEFAULT_MODEL + '.safetensors')}, its card {DEFAULT_MODEL}.json and {write_docs(card, args.docs)}")
    return 0


def _fine_tuned_text(card: dict) -> str:
    return f", fine-tuning {card['fine_tuned_from']}" if "fine_tuned_from" in card else ""


def _base_text(init: Path) -> str:
    """The model a run fine-tuned, as its card (when beside it) tells it."""
    card_path = init.with_suffix(".json")
    if not card_path.exists():
        return str(init)
    card = json.loads(card_path.read_text())
    return f"{init.name}: `{card.get('trained_by', '?')}` of {card.get('date', '?')}"


def recalibrate(folder: Path, docs: Path) -> int:
    """Fit and store the decision rule of the model in ``folder`` (same weights) on frames from the
    training ranges its card records (ranges added since take their defaults), re-score it, and
    update its card (a card without a rule keeps its plain argmax's figures as ``figures_plain_argmax``) and page."""
    card_path = folder / f"{DEFAULT_MODEL}.json"
    card = json.loads(card_path.read_text())
    with tempfile.TemporaryDirectory() as work:
        model_path = Path(work) / "default.safetensors"
        shutil.copyfile(folder / f"{DEFAULT_MODEL}.safetensors", model_path)
        ranges = {k: tuple(v) if isinstance(v, list) else v for k, v in card["training_frames"]["ranges"].items()}
        if "decision" not in card:  # its figures are the plain argmax's
            card["figures_plain_argmax"] = card["figures"]
        card["decision"] = calibrate(model_path, DomainRanges(**ranges))
        card["boundary"] = boundary_figures(model_path)
        model, meta = load_model(model_path, "cpu")
        card["normalisation"] = meta["normalisation_params"]
        card["figures"] = {name: score(model, meta, test) for name, test in test_sets().items()}
        with atomic_path(folder / f"{DEFAULT_MODEL}.safetensors") as tmp:
            shutil.copyfile(model_path, tmp)
    atomic_write_text(card_path, json.dumps(card, indent=1, default=str) + "\n")
    print(table(card["figures"]))
    print(f"wrote {folder / (DEFAULT_MODEL + '.safetensors')}, its card and {write_docs(card, docs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
