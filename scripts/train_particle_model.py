"""Train the bundled particle classifier and record how it was made and what it reached.

    python scripts/train_particle_model.py [--frames 240] [--seed 0] [--out src/napari_ccdseg/models]

Clusters come from domain-randomised simulated frames (napari_ccdseg.randomise, with more tracks,
trails and alphas per frame than a real one so every type is well represented), found both as a
catalogue finds them (the ``physical`` preset) and as the truth class map's components, each
labelled with the kind of the event holding most of its charge; clusters of no event are left out.
A histogram gradient-boosted tree ensemble (scikit-learn) learns the type from
:data:`napari_ccdseg.particles.FEATURE_NAMES`; a random forest and the hand cuts are scored on the
same validation clusters for comparison. The ensemble is exported to plain arrays
(``particles.trees``, safetensors format, evaluated with numpy; checked here against
scikit-learn's own probabilities) and its card ``particles.json`` records config, seed, and the
held-out figures of ``benchmarks/bench_particles.py``. A few minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_particles  # noqa: E402  (the held-out sets and their scoring)

from napari_ccdseg import particles  # noqa: E402
from napari_ccdseg.randomise import DomainRanges, random_config  # noqa: E402
from napari_ccdseg.simulate import SimConfig, frame_seed, simulate_frame  # noqa: E402

TRAIN_RANGES = dataclasses.replace(
    DomainRanges(), muon_rate=(0.5, 6.0), electron_track_rate=(1.0, 10.0), serial_trail_rate=(0.5, 6.0),
    few_electron_rate=(10.0, 100.0), alpha_probability=0.5,
)
"""The default model's detector ranges (noise 0.1–3.5 e⁻, gains, dark currents …) with every
event type present in most frames."""
BOOST = {"max_iter": 40, "learning_rate": 0.1, "max_leaf_nodes": 15, "max_depth": 5, "min_samples_leaf": 10,
         "l2_regularization": 1.0}
"""Validation accuracy peaks at 20–40 rounds (0.984; 0.982 at 100, 0.981 at 150), and depth 5 costs
nothing: 240 shallow trees keep typing 25,000 clusters to about a second."""
BALANCE_POWER = 0.5
"""Class weight (largest class count / class count)^0.5: rare types count more without the
commonest (points) losing precision to them."""


def training_clusters(frames: int, seed: int, rows: int = 512) -> pd.DataFrame:
    """Labelled clusters of ``frames`` randomised frames; found by the preset and by the truth map in turn."""
    base = SimConfig(rows=rows, cols=rows)
    tables = []
    for i in range(frames):
        rng = np.random.default_rng(frame_seed(seed, i))
        frame = simulate_frame(random_config(rng, base, TRAIN_RANGES), frame_seed(seed + 1, i))
        found_by = particles.FOUND_BY[i % 2]
        table, _, _ = particles.simulated_clusters(frame, found_by)
        of_events = ~table["kind"].isin((particles.NO_KIND, particles.FRAGMENT))
        tables.append(table[of_events].assign(frame=i, found_by=found_by))
    return pd.concat(tables, ignore_index=True)


def class_weights(kinds: pd.Series, power: float = BALANCE_POWER) -> np.ndarray:
    counts = kinds.value_counts()
    return (counts.max() / counts[kinds].to_numpy()) ** power


def export(model: HistGradientBoostingClassifier, card: dict) -> particles.TreeEnsemble:
    """The fitted ensemble as flat node arrays (one tree per iteration and class)."""
    parts, roots, tree_class, offset = [], [], [], 0
    for iteration in model._predictors:
        for cls, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise RuntimeError("categorical splits are not exported")
            parts.append((nodes, offset))
            roots.append(offset)
            tree_class.append(cls)
            offset += len(nodes)
    nodes = np.concatenate([n for n, _ in parts])
    shift = np.concatenate([np.full(len(n), o) for n, o in parts])
    leaf = nodes["is_leaf"].astype(bool)
    return particles.TreeEnsemble(
        feature=nodes["feature_idx"].astype(np.int32),
        threshold=nodes["num_threshold"].astype(np.float64),
        left=np.where(leaf, 0, nodes["left"] + shift).astype(np.int32),
        right=np.where(leaf, 0, nodes["right"] + shift).astype(np.int32),
        value=nodes["value"].astype(np.float32),
        is_leaf=leaf,
        nan_left=nodes["missing_go_to_left"].astype(bool),
        roots=np.asarray(roots, np.int32),
        tree_class=np.asarray(tree_class, np.int16),
        baseline=np.asarray(model._baseline_prediction, np.float64).ravel(),
        classes=tuple(str(c) for c in model.classes_),
        feature_names=particles.FEATURE_NAMES,
        card=card,
    )


def accuracy_and_recall(kinds: pd.Series, predicted: np.ndarray) -> dict:
    confusion = particles.particle_confusion(kinds, predicted)
    scores = particles.type_scores(confusion)
    return {"accuracy": round(particles.accuracy(confusion), 4),
            "recall": {k: round(float(v), 4) for k, v in scores["recall"].dropna().items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=160, help="randomised training frames (512²)")
    parser.add_argument("--validation-frames", type=int, default=40)
    parser.add_argument("--eval-frames", type=int, default=8, help="held-out frames per benchmark set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--balance-power", type=float, default=BALANCE_POWER,
                        help="class weight (max count / count)^power")
    parser.add_argument("--out", type=Path, default=particles.MODEL_DIR)
    args = parser.parse_args()
    start = time.perf_counter()
    train = training_clusters(args.frames, args.seed)
    valid = training_clusters(args.validation_frames, args.seed + 500_000)
    print(f"{len(train)} training clusters {train['kind'].value_counts().to_dict()}, "
          f"{len(valid)} validation ({time.perf_counter() - start:.0f} s)", flush=True)
    x, xv = (t[list(particles.FEATURE_NAMES)].to_numpy(np.float64) for t in (train, valid))
    weights = class_weights(train["kind"], args.balance_power)
    boosted = HistGradientBoostingClassifier(**BOOST, random_state=args.seed, early_stopping=False)
    boosted.fit(x, train["kind"].to_numpy(), sample_weight=weights)
    forest = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, n_jobs=2, random_state=args.seed)
    forest.fit(x, train["kind"].to_numpy(), sample_weight=weights)
    comparison = {
        "gradient-boosted trees": accuracy_and_recall(valid["kind"], boosted.predict(xv)),
        "random forest": accuracy_and_recall(valid["kind"], forest.predict(xv)),
        "hand cuts": accuracy_and_recall(valid["kind"], particles.hand_cut_types(valid)),
    }
    print(f"validation ({time.perf_counter() - start:.0f} s): {comparison}", flush=True)
    card = {
        "description": "particle type per cluster: gradient-boosted trees on shape features",
        "trained_by": f"python scripts/train_particle_model.py --frames {args.frames} --seed {args.seed} "
                      f"--balance-power {args.balance_power}",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seed": args.seed,
        "training": {"frames": args.frames, "size": 512, "clusters": int(len(train)),
                     "per_kind": {k: int(v) for k, v in train["kind"].value_counts().items()},
                     "found_by": list(particles.FOUND_BY), "ranges": dataclasses.asdict(TRAIN_RANGES),
                     "boosting": BOOST, "class_weight_power": args.balance_power},
        "validation_comparison": comparison,
        "software": {"python": platform.python_version(), "scikit-learn": sklearn.__version__, "numpy": np.__version__},
    }
    ensemble = export(boosted, card)
    gap = np.abs(ensemble.predict_proba(xv) - boosted.predict_proba(xv)).max()
    if gap > 1e-6:
        raise RuntimeError(f"exported ensemble disagrees with scikit-learn by {gap:.2g}")
    held_out = {}
    for name, config in bench_particles.held_out_sets().items():
        result = bench_particles.score(bench_particles.held_out_clusters(config, args.eval_frames), ensemble)
        held_out[name] = {
            method: {"accuracy": round(result[method]["accuracy"], 4),
                     "recall": {k: round(float(v), 4) for k, v in result[method]["scores"]["recall"].dropna().items()}}
            for method in ("learned", "hand cuts")
        }
        held_out[name]["clusters"] = result["clusters"]
        print(f"{name}: {held_out[name]}", flush=True)
    card["held_out"] = {"frames_per_set": args.eval_frames, "seed": bench_particles.EVAL_SEED, "sets": held_out}
    card["training_seconds"] = round(time.perf_counter() - start)
    ensemble.card = card
    path = ensemble.save(args.out / particles.MODEL_FILE.name)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB) and its card in {card['training_seconds']} s")


if __name__ == "__main__":
    main()
