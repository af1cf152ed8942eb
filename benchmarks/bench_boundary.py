"""Mask boundary and fake clusters of a model, with its plain argmax and with its decision rule.

Run from the repository root: ``python benchmarks/bench_boundary.py [--model default] [--quick] [--fit N]
[--veto] [--halo P …] [--dark-as-noise] [--oracle] [--bound] [--seed S]``.

Test frames are simulated with seeds no training or fitting run uses: the default model's held-out
single-amplifier detector (ADU, gain 5, row drift, CTI, trails, few-electron hits, glitches,
overscan) at read noise 0.16, 1.6 and 3 e⁻, the ``damic-m`` (electron-counting skipper
amplifier, dark current 0.3–1.5 e⁻/px) and ``single-sample`` presets, and 4-amplifier ``damic-m``
readouts of 384 × 256 per amplifier. Truth: a pixel is cluster
when it got ≥ 1 e⁻ from an event. Per test set and decision rule the tables give:

- *width bias*: per one-to-one matched cluster (one predicted component meets one true cluster),
  predicted minus true pixels, and the same as an equivalent diameter 2√(A/π), mean ± error;
- *ring*: the one-pixel band around each true cluster's edge (its outer ring, dilation minus
  cluster, and its own edge pixels): cluster precision and recall there, and the share of outer-ring
  pixels called cluster;
- cluster pixel precision / recall / F1, detection efficiency of clusters of ≥ 10 px (≥ 50 % of
  their pixels called cluster), fake clusters (predicted components touching no true cluster) per MPix;
- what the fakes are: where (touching a true hot pixel or glitch, glowing, within 2 px of a true
  cluster, outside the active area, or elsewhere: dark current and noise), their size and charge
  (e⁻, from the simulator's pedestal and gain);
- *glowing called (true)*: share of all pixels called glowing, and truly glowing (a dark-current
  rise called glowing shows here);
- detection by the charge the event left in each true cluster (e⁻, from the simulator), all sizes
  and ≥ 10 px below and above 50 e⁻: an energy threshold is what a search cuts on;
- cluster pixel recall by the event charge a true cluster pixel holds (1, 2, 3–5, ≥ 6 e⁻; the frame
  simulated again without noise, dark current and glow gives it), single-amplifier sets.

Decision rules: ``argmax`` (no offsets), ``model file`` (the offsets stored in the model, if any)
and, with ``--fit N``, ``fitted`` (offsets fitted here on N domain-randomised validation frames
of 256², ``scripts/train_default_model.py``'s ``VALIDATION_SEED``: never a training seed).
``--min-pixels K …`` adds the last rule's offsets with clusters of < K px dropped; ``--veto`` adds
each rule with the zero-electron veto (``napari_ccdseg.decision``: on frames that resolve electrons,
cluster pixels below half an electron given their best other class); ``--halo P …`` adds the last rule
with halos grown at posterior P (``decision.grow_halos``).
``--dark-as-noise`` adds every rule with the normalisation's ``dark_as_noise`` switched from what the
model file records (``napari_ccdseg.normalise``: dark current counted as noise on frames holding more
than ``framescale.DENSE_DARK_E``). ``--oracle`` adds :func:`oracle_rows` on the skipper sets: what the
electron count alone allows at cluster edges; ``--halo-cost`` only times ``predict_frame`` with and without
the halos on a 1536² ``damic-m`` frame; ``--bound`` adds :func:`bound_rows`: what an oracle that knows
every event's charge points allows at precision 0.95, alone and added to the model's rule.
``--seed S``: test frames from seeds S, S + 1 … instead of 910 000 (another sample of the same sets).
``--quick``: 256² held-out frames, 2 per set, 8 validation frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from napari_ccdseg import simulate
from napari_ccdseg.bundled import resolve_model
from napari_ccdseg.classes import CLUSTER, GLOWING, HOT_PIXEL
from napari_ccdseg.decision import (
    DecisionRule, decide_with_fallback, drop_small_clusters, empty_pixels, fit_model_offsets, grow_frame_halos, veto_empty,
)
from napari_ccdseg.framescale import FrameScale, electron_scale
from napari_ccdseg.metrics import cluster_instances, match_clusters
from napari_ccdseg.modelfile import load_model
from napari_ccdseg.predict import predict_frame
from napari_ccdseg.randomise import randomised_frames
from napari_ccdseg.simulate import (
    SIM_PRESETS, AmplifierLayout, SimConfig, SimulatedFrame, frame_seed, simulate_ccd, simulate_frame,
)

ROOT = Path(__file__).resolve().parents[1]
TEST_SEED = 910_000
"""Seeds of the test frames: not the card's (900 000), not training's (0, 1), not fitting's."""
DAMIC_AMPS = "damic-m 4 amps, 384 × 256"
"""``ccdseg simulate --preset damic-m --amplifiers 4 --size 384 256``: the dark-current rise along
each amplifier's rows spans a larger share of the network's field of view than at 320 × 640."""
MIN_SIZE_PX = 10
PIXEL_CHARGE_BINS_E = (1, 2, 3, 6, math.inf)
"""Bins of the event charge a true cluster pixel holds: 1, 2, 3–5 and ≥ 6 e⁻."""
EIGHT = np.ones((3, 3), bool)
FAKE_PLACES = ("hot pixel / glitch", "glowing", "next to a cluster", "outside active area", "dark current / noise")


def _card_script():
    spec = importlib.util.spec_from_file_location("train_default_model", ROOT / "scripts" / "train_default_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_sets(quick: bool, seed: int = TEST_SEED) -> dict[str, list[SimulatedFrame]]:
    """Simulated test frames per set, with their metadata (pedestal, gain, active area)."""
    card = _card_script()
    n, side = (2, 256) if quick else (4, 512)
    configs = {
        f"held-out {noise} e⁻": dataclasses.replace(card.held_out_config(noise), rows=side, cols=side)
        for noise in card.NOISE_LEVELS_E
    }
    configs["damic-m preset"] = SIM_PRESETS["damic-m"]
    configs["single-sample preset"] = dataclasses.replace(SIM_PRESETS["single-sample"], rows=side, cols=side)
    sets = {
        name: [simulate_frame(config, frame_seed(seed + k, i)) for i in range(n)]
        for k, (name, config) in enumerate(configs.items())
    }
    readout = dataclasses.replace(SIM_PRESETS["damic-m"], rows=384, cols=256)
    sets[DAMIC_AMPS] = [
        amp for ccd in range(1 if quick else 2)
        for amp in simulate_ccd(readout, frame_seed(seed + len(configs), ccd), AmplifierLayout(amplifiers=4))
    ]
    return sets


@dataclasses.dataclass
class Tally:
    """Sums over a test set's frames for one decision rule."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    band_tp: int = 0
    band_called: int = 0
    band_true: int = 0
    ring: int = 0
    ring_called: int = 0
    big: int = 0
    big_found: int = 0
    small: int = 0
    small_found: int = 0
    megapixels: float = 0.0
    glow_called: int = 0
    glow_true: int = 0
    delta_px: list = dataclasses.field(default_factory=list)
    delta_diameter: list = dataclasses.field(default_factory=list)
    fakes: list = dataclasses.field(default_factory=list)
    """(place, size px, charge e⁻) per fake cluster."""
    by_charge: list = dataclasses.field(default_factory=list)
    """(charge e⁻ the event left, size px, found) per true cluster."""
    pixel_charge_true: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(PIXEL_CHARGE_BINS_E) - 1, int))
    pixel_charge_called: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(PIXEL_CHARGE_BINS_E) - 1, int))
    """True cluster pixels, and those called cluster, per bin of the event charge they hold."""


def _one_to_one(truth_instances: np.ndarray, components: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true id, predicted id) pairs where each meets only the other."""
    both = (truth_instances > 0) & (components > 0)
    pairs = np.unique(np.stack([truth_instances[both], components[both]]), axis=1)
    true_ids, true_n = np.unique(pairs[0], return_counts=True)
    pred_ids, pred_n = np.unique(pairs[1], return_counts=True)
    single_true, single_pred = set(true_ids[true_n == 1]), set(pred_ids[pred_n == 1])
    keep = [i for i in range(pairs.shape[1]) if pairs[0, i] in single_true and pairs[1, i] in single_pred]
    return pairs[0, keep], pairs[1, keep]


def _electrons(frame: SimulatedFrame) -> np.ndarray:
    meta = frame.metadata
    if meta["units"] == "e":
        return frame.image.astype(np.float64)
    return (frame.image.astype(np.float64) - meta["pedestal_adu"]) / meta["gain_adu_per_e"]


def _fake_places(frame: SimulatedFrame, components: np.ndarray, fake_ids: np.ndarray) -> list[str]:
    truth = frame.labels
    near_hot = ndimage.binary_dilation(truth == HOT_PIXEL, EIGHT)
    near_glow = ndimage.binary_dilation(truth == GLOWING, EIGHT)
    near_cluster = ndimage.binary_dilation(truth == CLUSTER, EIGHT, iterations=2)
    active = np.zeros(truth.shape, bool)
    (r0, r1), (c0, c1) = frame.metadata["active_rows"], frame.metadata["active_cols"]
    active[r0:r1, c0:c1] = True
    places = []
    for index in fake_ids:
        pixels = components == index
        for place, mask in zip(FAKE_PLACES, (near_hot, near_glow, near_cluster, ~active)):
            if mask[pixels].any():
                places.append(place)
                break
        else:
            places.append(FAKE_PLACES[-1])
    return places


def event_charge(frame: SimulatedFrame) -> np.ndarray | None:
    """Charge (e⁻) each pixel of a single-amplifier simulated frame got from events, as read out
    (CTI included): the frame simulated again from its seed without noise, dark current, glow and
    glitches, which leaves its events as they were (None for an amplifier of :func:`simulate_ccd`)."""
    meta = frame.metadata
    if "amplifier" in meta:
        return None
    quiet = dataclasses.replace(
        SimConfig.from_dict(meta["config"]), read_noise_e=0.0, dark_current_e=0.0, dark_current_row_ramp=0.0,
        dark_current_col_ramp=0.0, amp_glow_e=0.0, glitch_rate=0.0, pedestal_drift_e=0.0, quantisation_step=0.0,
    )
    clean = simulate_frame(quiet, meta["seed"])
    if not np.array_equal(clean.instances, frame.instances):
        raise RuntimeError(f"seed {meta['seed']}: the quiet frame has other events")
    return (clean.image.astype(np.float64) - quiet.pedestal_adu) / quiet.gain_adu_per_e


def add_frame(tally: Tally, frame: SimulatedFrame, pred: np.ndarray, charge: np.ndarray | None = None) -> None:
    """Add one frame's boundary, pixel, detection and fake figures to ``tally`` (``charge``: each
    pixel's event charge, :func:`event_charge`, for recall by the charge a pixel holds)."""
    truth_cluster = frame.labels == CLUSTER
    called = pred == CLUSTER
    if charge is not None:
        bins = tally.pixel_charge_true.size
        held = np.digitize(np.rint(charge[truth_cluster]), PIXEL_CHARGE_BINS_E) - 1
        inside = (held >= 0) & (held < bins)
        tally.pixel_charge_true += np.bincount(held[inside], minlength=bins)
        tally.pixel_charge_called += np.bincount(held[inside & called[truth_cluster]], minlength=bins)
    tally.tp += int((called & truth_cluster).sum())
    tally.fp += int((called & ~truth_cluster).sum())
    tally.fn += int((~called & truth_cluster).sum())
    ring = ndimage.binary_dilation(truth_cluster, EIGHT) & ~truth_cluster
    edge = truth_cluster & ~ndimage.binary_erosion(truth_cluster, EIGHT, border_value=1)
    band = ring | edge
    tally.band_tp += int((called & edge).sum())
    tally.band_called += int((called & band).sum())
    tally.band_true += int(edge.sum())
    tally.ring += int(ring.sum())
    tally.ring_called += int((called & ring).sum())
    match = match_clusters(frame.instances, pred)
    tally.big += int((match.sizes >= MIN_SIZE_PX).sum())
    tally.big_found += int(match.found[match.sizes >= MIN_SIZE_PX].sum())
    tally.small += int((match.sizes < MIN_SIZE_PX).sum())
    tally.small_found += int(match.found[match.sizes < MIN_SIZE_PX].sum())
    tally.megapixels += match.n_pixels / 1e6
    electrons = {c["id"]: c["electrons"] for c in frame.metadata["clusters"]}
    ids = np.unique(frame.instances[frame.instances > 0])
    tally.by_charge += [(electrons[i], int(n), bool(f)) for i, n, f in zip(ids, match.sizes, match.found) if i in electrons]
    tally.glow_called += int((pred == GLOWING).sum())
    tally.glow_true += int((frame.labels == GLOWING).sum())
    components = cluster_instances(pred)
    true_ids, pred_ids = _one_to_one(frame.instances, components)
    true_sizes = np.bincount(frame.instances.ravel())
    pred_sizes = np.bincount(components.ravel())
    for t, p in zip(true_ids, pred_ids):
        tally.delta_px.append(int(pred_sizes[p]) - int(true_sizes[t]))
        tally.delta_diameter.append(2 * (math.sqrt(pred_sizes[p] / math.pi) - math.sqrt(true_sizes[t] / math.pi)))
    touched = np.unique(components[truth_cluster & called])
    fake_ids = np.setdiff1d(np.arange(1, components.max() + 1), touched)
    if fake_ids.size:
        charge = ndimage.sum_labels(_electrons(frame), components, fake_ids)
        for place, size, q in zip(_fake_places(frame, components, fake_ids), pred_sizes[fake_ids], charge):
            tally.fakes.append((place, int(size), float(q)))


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def _mean_and_error(values: list) -> tuple[float | None, float | None]:
    """Mean and its standard error (None without values; the error None for one value)."""
    if not values:
        return None, None
    v = np.asarray(values, np.float64)
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else None)


def _pm(summary_: dict, key: str) -> str:
    """``mean ± error`` of a summary's bias (its ``<key>_err`` may be absent: cards made before it)."""
    mean, err = summary_.get(key), summary_.get(f"{key}_err")
    if mean is None:
        return "–"
    return f"{mean:+.2f}" + (f" ± {err:.2f}" if err is not None else "")


def summary(tally: Tally) -> dict:
    """The figures of one test set and rule, as numbers (the card stores these)."""
    precision, recall = _ratio(tally.tp, tally.tp + tally.fp), _ratio(tally.tp, tally.tp + tally.fn)
    fakes = len(tally.fakes)
    (width, width_err), (diameter, diameter_err) = _mean_and_error(tally.delta_px), _mean_and_error(tally.delta_diameter)
    rounded = lambda value, digits: None if value is None else round(value, digits)  # noqa: E731
    return {
        "width_bias_px": rounded(width, 2),
        "width_bias_px_err": rounded(width_err, 2),
        "width_bias_diameter_px": rounded(diameter, 3),
        "width_bias_diameter_px_err": rounded(diameter_err, 3),
        "matched_clusters": len(tally.delta_px),
        "ring_precision": round(_ratio(tally.band_tp, tally.band_called), 4),
        "ring_recall": round(_ratio(tally.band_tp, tally.band_true), 4),
        "outer_ring_called": round(_ratio(tally.ring_called, tally.ring), 4),
        "cluster_precision": round(precision, 4),
        "cluster_recall": round(recall, 4),
        "cluster_f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "detection_10px": round(_ratio(tally.big_found, tally.big), 4),
        "clusters_10px": tally.big,
        "detection_below_10px": round(_ratio(tally.small_found, tally.small), 4),
        "clusters_below_10px": tally.small,
        "fakes_per_megapixel": round(fakes / tally.megapixels, 1),
        "glowing_called_share": round(tally.glow_called / (tally.megapixels * 1e6), 4),
        "glowing_true_share": round(tally.glow_true / (tally.megapixels * 1e6), 4),
    }


def _glow(summary_: dict) -> str:
    """Share of pixels called glowing, and truly glowing (absent from cards made before it)."""
    if "glowing_called_share" not in summary_:
        return "–"
    return f"{summary_['glowing_called_share']:.1%} ({summary_['glowing_true_share']:.1%})"


def boundary_table(summaries: dict[str, dict[str, dict]]) -> str:
    """Markdown table of :func:`summary` figures per test set and rule (the card stores the same dicts)."""
    lines = [
        "| test set | rule | width bias (px) | diameter bias (px) | ring precision | ring recall | outer ring called "
        "| cluster precision | recall | F1 | detection ≥ 10 px | detection < 10 px | fakes/MPix | glowing called (true) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rules in summaries.items():
        for rule, s in rules.items():
            lines.append(
                f"| {name} | {rule} | {_pm(s, 'width_bias_px')} | {_pm(s, 'width_bias_diameter_px')} | "
                f"{s['ring_precision']:.3f} | {s['ring_recall']:.3f} | {s['outer_ring_called']:.3f} | "
                f"{s['cluster_precision']:.3f} | {s['cluster_recall']:.3f} | {s['cluster_f1']:.3f} | "
                f"{s['detection_10px']:.3f} ({s['clusters_10px']}) | {s['detection_below_10px']:.3f} ({s['clusters_below_10px']}) | "
                f"{s['fakes_per_megapixel']:.1f} | {_glow(s)} |"
            )
    return "\n".join(lines)


def fakes_table(results: dict[str, dict[str, Tally]]) -> str:
    lines = [
        "| test set | rule | fakes/MPix | " + " | ".join(FAKE_PLACES) + " | 1 px | median size (px) | median charge (e⁻) | < 3 e⁻ |",
        "|---|---|---|" + "---|" * len(FAKE_PLACES) + "---|---|---|---|",
    ]
    for name, rules in results.items():
        for rule, tally in rules.items():
            fakes = tally.fakes
            per_place = [sum(f[0] == place for f in fakes) for place in FAKE_PLACES]
            sizes = [f[1] for f in fakes]
            charges = [f[2] for f in fakes]
            lines.append(
                f"| {name} | {rule} | {len(fakes) / tally.megapixels:.1f} | "
                + " | ".join(str(n) for n in per_place)
                + (
                    f" | {np.mean(np.asarray(sizes) == 1):.0%} | {np.median(sizes):.0f} | {np.median(charges):.1f} | "
                    f"{np.mean(np.asarray(charges) < 3):.0%} |"
                    if fakes else " | – | – | – | – |"
                )
            )
    return "\n".join(lines)


CHARGE_BINS_E = (0, 20, 50, 100, 300, math.inf)
"""Edges of the charge bins of :func:`charge_table` (e⁻ the event left; 3.77 eV each, as simulated)."""


def pixel_charge_table(results: dict[str, dict[str, Tally]]) -> str:
    """Cluster pixel recall by the event charge a true cluster pixel holds (share of such pixels in
    brackets): where recall is lost, and how much of the truth a pixel's count can show at all."""
    names = ["1 e⁻", "2 e⁻", "3–5 e⁻", "≥ 6 e⁻"]
    lines = ["| test set | rule | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for name, rules in results.items():
        for rule, tally in rules.items():
            true, called = tally.pixel_charge_true, tally.pixel_charge_called
            if not true.sum():
                continue
            cells = [f"{c / t:.3f} ({t / true.sum():.0%})" if t else "–" for t, c in zip(true, called)]
            lines.append(f"| {name} | {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def charge_table(results: dict[str, dict[str, Tally]]) -> str:
    """Detection efficiency by the charge each true cluster holds (all sizes, and ≥ 10 px): what an
    energy threshold of a search can rely on, where the pixel-count cut mixes faint diffuse clusters
    with bright ones."""
    bins = list(zip(CHARGE_BINS_E[:-1], CHARGE_BINS_E[1:]))
    names = [f"{lo}–{hi} e⁻" if math.isfinite(hi) else f"≥ {lo} e⁻" for lo, hi in bins]
    lines = [
        "| test set | rule | " + " | ".join(names) + " | ≥ 10 px, < 50 e⁻ | ≥ 10 px, ≥ 50 e⁻ |",
        "|---|---|" + "---|" * (len(names) + 2),
    ]

    def cell(rows: list) -> str:
        return f"{np.mean([r[2] for r in rows]):.3f} ({len(rows)})" if rows else "–"

    for name, rules in results.items():
        for rule, tally in rules.items():
            rows = tally.by_charge
            cells = [cell([r for r in rows if lo <= r[0] < hi]) for lo, hi in bins]
            big = [r for r in rows if r[1] >= MIN_SIZE_PX]
            cells += [cell([r for r in big if r[0] < 50]), cell([r for r in big if r[0] >= 50])]
            lines.append(f"| {name} | {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def decide_frame(logits: np.ndarray, rule: DecisionRule, image: np.ndarray, found: FrameScale | None) -> np.ndarray:
    """The class map a rule gives from a frame's raw logits, as ``predict_frame`` would (``found``:
    the frame's electron scale, None when it does not resolve electrons)."""
    shifted = logits if rule.offsets is None else logits + rule.offsets[:, None, None]
    labels, fallback = decide_with_fallback(shifted)
    if rule.zero_electron_veto and found is not None:
        veto_empty(labels, fallback, empty_pixels(found, image))
    labels = drop_small_clusters(labels, fallback, rule.min_cluster_pixels)
    if rule.halo_posterior and found is not None:
        grow_frame_halos(labels, found, image, rule.halo_posterior)
    return labels


def measure(model, meta: dict, sets: dict[str, list[SimulatedFrame]], rules: dict[str, DecisionRule]) -> dict[str, dict[str, Tally]]:
    """Tallies per test set and decision rule."""
    results: dict[str, dict[str, Tally]] = {}
    for name, frames in sets.items():
        results[name] = {rule: Tally() for rule in rules}
        for frame in frames:
            prediction = predict_frame(
                model, meta, frame.image, probabilities=True, offsets=None, min_cluster_pixels=1,
                zero_electron_veto=False, halo_posterior=None,
            )
            logits = np.log(np.maximum(prediction.probabilities, 1e-30))
            found = electron_scale(frame.image)
            charge = event_charge(frame)
            for rule_name, rule in rules.items():
                add_frame(results[name][rule_name], frame, decide_frame(logits, rule, frame.image, found), charge)
    return results


def oracle_rows(sets: dict[str, list[SimulatedFrame]], counts: tuple[int, ...] = (1, 2, 3, 4)) -> str:
    """What the electron count alone allows at a cluster's edge, whatever the model: an oracle that
    knows every true cluster's interior exactly (its 8-connected erosion) and calls a pixel of the
    band around it (the cluster's edge pixels and its outer ring) cluster when it reads ≥ k e⁻.
    Its precision and recall bound those of any rule that decides edge pixels by their count."""
    lines = ["| test set | oracle | cluster precision | recall |", "|---|---|---|---|"]
    for name, frames in sets.items():
        for k in counts:
            tp = fp = fn = 0
            for frame in frames:
                truth = frame.labels == CLUSTER
                core = ndimage.binary_erosion(truth, EIGHT, border_value=1)
                band = ndimage.binary_dilation(truth, EIGHT) & ~core
                called = core | (band & (np.rint(_electrons(frame)) >= k))
                tp += int((called & truth).sum())
                fp += int((called & ~truth).sum())
                fn += int((~called & truth).sum())
            lines.append(f"| {name} | edge pixels ≥ {k} e⁻ | {_ratio(tp, tp + fp):.3f} | {_ratio(tp, tp + fn):.3f} |")
    return "\n".join(lines)


BOUND_PRECISION = 0.95
BOUND_RECALL = 0.85
"""The operating point issue 15 asks of the default model on electron-counting frames."""


def event_posteriors(frame: SimulatedFrame, samples: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Per active pixel of a single-amplifier simulated frame: an oracle's probability that it holds
    event charge, and the truth (cluster or not).

    The oracle knows what no image shows: every charge point's position, depth and electron count
    (so each pixel's expected event charge μ, averaged over ``samples`` diffusions by the simulator's
    own charge collection), each pixel's expected dark current and defect charge λ, and the pixel's
    exact electron count n (no read noise). With Poisson counts P(no event charge | n) = (λ/(λ+μ))ⁿ.
    Ranking pixels by this posterior gives, to the Poisson approximation, the most true cluster pixels
    any rule can call at a given number of calls: its precision/recall curve bounds every model's.
    The simulator's private steps are replayed in its order so the draws are the frame's own.
    """
    meta = frame.metadata
    cfg = SimConfig.from_dict(meta["config"])
    rng = np.random.default_rng(meta["seed"])
    deposits, kinds, _ = simulate._all_events(cfg, rng)
    simulate._collect(cfg, deposits, len(kinds), rng)  # advances rng to the defects' draws
    defects = simulate._defects(cfg, rng)
    mu = np.zeros((cfg.rows, cfg.cols))
    for k in range(samples):
        mu += simulate._collect(cfg, deposits, len(kinds), np.random.default_rng(k)).charge
    mu /= samples
    lam = simulate.dark_current_map(cfg) + defects.glow + defects.hot
    exact = dataclasses.replace(cfg, read_noise_e=0.0, pedestal_drift_e=0.0, quantisation_step=0.0, glitch_rate=0.0)
    quiet = simulate_frame(exact, meta["seed"])
    (r0, r1), (c0, c1) = meta["active_rows"], meta["active_cols"]
    scale = 1.0 if cfg.units == "e" else cfg.gain_adu_per_e
    offset = 0.0 if cfg.units == "e" else cfg.pedestal_adu
    n = np.rint((quiet.image[r0:r1, c0:c1].astype(np.float64) - offset) / scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        none = np.where(mu > 0, (lam / (lam + mu)) ** n, 1.0)
    posterior = 1.0 - none
    truth = frame.labels[r0:r1, c0:c1]
    posterior[truth != quiet.labels[r0:r1, c0:c1]] = 0.0  # glitches: the oracle knows the spike
    return posterior, truth == CLUSTER


def _best_recall(hits: np.ndarray, base_tp: int, base_calls: int, n_true: int) -> tuple[float, int]:
    """Most recall at precision ≥ :data:`BOUND_PRECISION` when pixels are added in the given order
    (``hits``: 1 for a true one) to ``base_calls`` calls holding ``base_tp`` true ones; and how many."""
    tp = base_tp + np.cumsum(hits)
    calls = base_calls + np.arange(1, hits.size + 1)
    ok = np.flatnonzero(tp / calls >= BOUND_PRECISION)
    if not ok.size:
        return base_tp / n_true, 0
    return tp[ok[-1]] / n_true, int(ok[-1] + 1)


def bound_rows(sets: dict[str, list[SimulatedFrame]], samples: int = 1000, model=None, meta: dict | None = None) -> str:
    """Markdown rows of what the oracle of :func:`event_posteriors` reaches per single-amplifier
    test set: the most recall any rule can have at precision ≥ 0.95, the best precision at recall
    0.85, and at the first operating point its detection of clusters of ≥ 10 px and fakes per MPix
    (one global threshold; not a bound on detection, which a rule could trade against pixel
    precision). With a ``model``: its decision rule's precision and recall, and the most recall at
    precision ≥ 0.95 when pixels within 2 px of its clusters are added in the oracle's order — what
    a perfect halo estimate could add to that model."""
    rule = None if meta is None else DecisionRule.from_metadata(meta)
    lines = [
        f"| test set | oracle recall at precision ≥ {BOUND_PRECISION} | oracle precision at recall {BOUND_RECALL} "
        "| oracle detection ≥ 10 px there | oracle fakes/MPix there | model precision / recall "
        f"| model + oracle halo: recall at precision ≥ {BOUND_PRECISION} |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, frames in sets.items():
        if any("amplifier" in f.metadata for f in frames):
            continue
        scored = [event_posteriors(frame, samples) for frame in frames]
        posterior = np.concatenate([p.ravel() for p, _ in scored])
        truth = np.concatenate([t.ravel() for _, t in scored])
        order = np.argsort(-posterior, kind="stable")
        recall, calls = _best_recall(truth[order], 0, 0, int(truth.sum()))
        hits = np.cumsum(truth[order])
        reach = np.flatnonzero(hits >= BOUND_RECALL * truth.sum())
        precision_at = hits[reach[0]] / (reach[0] + 1) if reach.size else float("nan")
        threshold = posterior[order][max(calls - 1, 0)]
        tally = Tally()
        model_cells = "– | –"
        base_tp = base_calls = 0
        added, added_truth = [], []
        for frame, (p, t) in zip(frames, scored):
            (r0, r1), (c0, c1) = frame.metadata["active_rows"], frame.metadata["active_cols"]
            pred = np.zeros(frame.labels.shape, np.uint8)
            pred[r0:r1, c0:c1][p >= threshold] = CLUSTER
            add_frame(tally, frame, pred)
            if model is not None:
                prediction = predict_frame(model, meta, frame.image, probabilities=True, offsets=None, min_cluster_pixels=1,
                                           zero_electron_veto=False, halo_posterior=None)
                logits = np.log(np.maximum(prediction.probabilities, 1e-30))
                plain = dataclasses.replace(rule, halo_posterior=None)
                labels = decide_frame(logits, plain, frame.image, electron_scale(frame.image))[r0:r1, c0:c1]
                called = labels == CLUSTER
                base_tp += int((called & t).sum())
                base_calls += int(called.sum())
                near = ndimage.binary_dilation(called, EIGHT, iterations=2) & (labels == 0)
                added.append(p[near])
                added_truth.append(t[near])
        if model is not None:
            extra, extra_truth = np.concatenate(added), np.concatenate(added_truth)
            grown, _ = _best_recall(extra_truth[np.argsort(-extra, kind="stable")], base_tp, base_calls, int(truth.sum()))
            model_cells = f"{base_tp / base_calls:.3f} / {base_tp / truth.sum():.3f} | {grown:.3f}"
        s = summary(tally)
        lines.append(
            f"| {name} | {recall:.3f} | {precision_at:.3f} | {s['detection_10px']:.3f} ({s['clusters_10px']}) "
            f"| {s['fakes_per_megapixel']:.1f} | {model_cells} |"
        )
    return "\n".join(lines)


def halo_cost(model, meta: dict, side: int = 1536, repeats: int = 3) -> str:
    """What the halos add to ``predict_frame`` on one ``damic-m`` frame of side² pixels: best of
    ``repeats`` wall times with and without them, and their ratio (same run, same frame)."""
    frame = simulate_frame(dataclasses.replace(SIM_PRESETS["damic-m"], rows=side, cols=side), TEST_SEED)
    rule = DecisionRule.from_metadata(meta)
    times = {}
    for name, posterior in (("without halos", None), ("with halos", rule.halo_posterior or 0.9)):
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            predict_frame(model, meta, frame.image, halo_posterior=posterior)
            best = min(best, time.perf_counter() - start)
        times[name] = best
    return (f"predict_frame on a {side}² damic-m frame: {times['without halos']:.2f} s without halos, "
            f"{times['with halos']:.2f} s with them (× {times['with halos'] / times['without halos']:.2f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model file or bundled model name")
    parser.add_argument("--quick", action="store_true", help="small frames, few of them")
    parser.add_argument("--fit", type=int, default=0, help="also fit offsets on N validation frames")
    parser.add_argument(
        "--min-pixels", type=int, nargs="*", default=[], help="also the last rule's offsets with these smallest cluster sizes"
    )
    parser.add_argument("--veto", action="store_true", help="also each rule with the zero-electron veto")
    parser.add_argument("--halo", type=float, nargs="*", default=[], help="also the last rule with halos grown at these posteriors")
    parser.add_argument(
        "--dark-as-noise", action="store_true",
        help="also every rule with the normalisation's dark_as_noise switched from what the model file records",
    )
    parser.add_argument("--oracle", action="store_true", help="also the edge-count oracle on the skipper sets")
    parser.add_argument("--bound", action="store_true", help="also the oracle bound of event_posteriors on the skipper sets")
    parser.add_argument("--halo-cost", action="store_true", help="only time predict_frame with and without halos")
    parser.add_argument("--seed", type=int, default=TEST_SEED, help="first seed of the test frames (another sample)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.monotonic()
    model, meta = load_model(resolve_model(args.model))
    if args.halo_cost:
        print(halo_cost(model, meta))
        return 0
    rules: dict[str, DecisionRule] = {"argmax": DecisionRule()}
    stored = DecisionRule.from_metadata(meta)
    if stored.offsets is not None or stored.min_cluster_pixels > 1 or stored.zero_electron_veto:
        rules["model file"] = stored
    if args.fit:
        frames = randomised_frames(min(args.fit, 8) if args.quick else args.fit, _card_script().VALIDATION_SEED)
        fit = fit_model_offsets(model, meta, frames)
        rules["fitted"] = DecisionRule(np.asarray(fit.offsets, np.float32))
        print(f"fitted offsets {np.round(fit.offsets, 3).tolist()} on {len(frames)} frames: "
              f"macro F1 {fit.score_before:.4f} -> {fit.score_after:.4f}")
    last, last_rule = list(rules.items())[-1]
    for smallest in args.min_pixels:
        rules[f"{last}, ≥ {smallest} px"] = dataclasses.replace(last_rule, min_cluster_pixels=smallest)
    if args.veto:
        for name, rule in list(rules.items()):
            if not rule.zero_electron_veto:
                rules[f"{name}, zero-electron veto"] = dataclasses.replace(rule, zero_electron_veto=True)
    last, last_rule = list(rules.items())[-1]
    for posterior in args.halo:
        rules[f"{last}, halo ≥ {posterior}"] = dataclasses.replace(last_rule, halo_posterior=posterior)
    sets = test_sets(args.quick, args.seed)
    results = measure(model, meta, sets, rules)
    if args.dark_as_noise:
        recorded = bool(meta["normalisation_params"].get("dark_as_noise"))
        switched = {**meta, "normalisation_params": {**meta["normalisation_params"], "dark_as_noise": not recorded}}
        suffix = ", dark_as_noise on" if not recorded else ", dark_as_noise off"
        for name, per_rule in measure(model, switched, sets, rules).items():
            results[name].update({rule + suffix: tally for rule, tally in per_rule.items()})
    print(boundary_table({name: {rule: summary(t) for rule, t in per_rule.items()} for name, per_rule in results.items()}))
    print()
    print(fakes_table(results))
    print()
    print(charge_table(results))
    print()
    print(pixel_charge_table(results))
    if args.oracle:
        print()
        print(oracle_rows({name: frames for name, frames in sets.items() if "0.16" in name or "damic" in name}))
    if args.bound:
        print()
        print(bound_rows({name: frames for name, frames in sets.items() if "0.16" in name or "damic" in name}, model=model, meta=meta))
    print(f"\n{time.monotonic() - started:.0f} s, torch {torch.__version__}, 1 thread", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
