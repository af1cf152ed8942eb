"""Two model files side by side on the test frames that decide whether a new default model ships.

Run from the repository root: ``python benchmarks/bench_models.py CANDIDATE [--reference default] [--more]``.

Sets (truth exact, frames no training or fitting run uses):

- the three-noise table's test frames (docs/benchmarks.md section 1, ``run_benchmarks.three_noise_tests``:
  ``conventional`` preset, 4 frames of 512² per read noise 0.16 / 1.6 / 3 e⁻);
- the default model card's test sets (``scripts/train_default_model.py``'s ``test_sets``: the held-out
  ADU detector at the three noises and the *other detector*, 4 amplifiers with one dead, 2 CCDs);
- ``--more``: as many again of each from other seeds (section 1's config from seeds 70 000 + 1000·k + i,
  8 frames per noise; the held-out detector from ``frame_seed(961 000 + 10·noise, i)``, 8 frames; the other
  detector from 4 CCDs of ``frame_seed(960 000, ccd)``), so a difference can be told from one sample's luck.

Per set and model: pixel F1 of each class, cluster precision and recall, cluster detection efficiency and
fake clusters per MPix (``napari_ccdseg.scoring.predict_and_evaluate``, each model with its own decision rule).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run_benchmarks  # noqa: E402  (section 1's test frames)
from bench_boundary import _card_script  # noqa: E402  (the card's test sets)

from napari_ccdseg.bundled import resolve_model  # noqa: E402
from napari_ccdseg.classes import CLASS_NAMES  # noqa: E402
from napari_ccdseg.dataset import LabelledFrame  # noqa: E402
from napari_ccdseg.modelfile import load_model  # noqa: E402
from napari_ccdseg.scoring import model_labeller, predict_and_evaluate  # noqa: E402
from napari_ccdseg.simulate import frame_seed, simulate_ccd, simulate_frame  # noqa: E402


def _labelled(frames) -> list[LabelledFrame]:
    return [LabelledFrame(f"f{i}", f.image, f.labels, f.instances) for i, f in enumerate(frames)]


def test_sets(more: bool) -> dict[str, list[LabelledFrame]]:
    card = _card_script()
    sets = {
        f"three-noise table, {noise} e⁻": _labelled(run_benchmarks.three_noise_tests(k, noise, 4, 512))
        for k, noise in enumerate(run_benchmarks.NOISE_LEVELS)
    }
    sets.update({f"card: {name}": frames for name, frames in card.test_sets().items()})
    if more:
        for k, noise in enumerate(run_benchmarks.NOISE_LEVELS):
            sets[f"three-noise table, {noise} e⁻, 8 more"] = _labelled(
                run_benchmarks.three_noise_tests(k, noise, 8, 512, first_seed=70_000))
        for noise in card.NOISE_LEVELS_E:
            config = card.held_out_config(noise)
            sets[f"card: held-out detector, {noise} e⁻, 8 more"] = _labelled(
                simulate_frame(config, frame_seed(961_000 + int(noise * 10), i)) for i in range(8))
        sets["card: other detector, 4 more CCDs"] = _labelled(
            amp for ccd in range(4) for amp in simulate_ccd(card.OTHER_DETECTOR, frame_seed(960_000, ccd), card.OTHER_LAYOUT))
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", help="model file or bundled model name")
    parser.add_argument("--reference", default="default", help="model file or bundled model name")
    parser.add_argument("--more", action="store_true", help="also frames of other seeds")
    args = parser.parse_args(argv)
    started = time.monotonic()
    models = {role: load_model(resolve_model(name), "cpu")
              for role, name in (("reference", args.reference), ("candidate", args.candidate))}
    print(f"reference: {resolve_model(args.reference)}; candidate: {resolve_model(args.candidate)}\n")
    print("| test set | model | " + " | ".join(f"F1 {c}" for c in CLASS_NAMES)
          + " | cluster precision | cluster recall | detection eff. | fakes/MPix |")
    print("|---|---|" + "---|" * (len(CLASS_NAMES) + 4))
    for set_name, frames in test_sets(args.more).items():
        for name, (model, meta) in models.items():
            ev = predict_and_evaluate(frames, model_labeller(model, meta))
            cluster = ev.pixel.classes["cluster"]
            print(f"| {set_name} | {name} | " + " | ".join(f"{ev.pixel.classes[c].f1:.3f}" for c in CLASS_NAMES)
                  + f" | {cluster.precision:.3f} | {cluster.recall:.3f} | {ev.clusters.efficiency:.3f} "
                  f"| {ev.clusters.fakes_per_megapixel:.1f} |", flush=True)
    print(f"\n{time.monotonic() - started:.0f} s, torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
