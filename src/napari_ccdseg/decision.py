"""The decision rule: class = argmax(logits + per-class offsets), offsets fitted on held-out frames.

A network trained with class-weighted cross-entropy learns logits raised by the log of each class's
weight, so the plain argmax over-calls the rare cluster class: masks come out about a pixel wider
than the clusters and lone noise pixels become fake clusters. Adding a constant offset per class
to the logits (a prior correction) undoes that without retraining. The offsets are fitted on
frames with truth the network never trained on, stored in the model file's metadata under
``decision`` and applied by :func:`napari_ccdseg.predict.predict_frame` for every caller (CLI,
widgets, batch); a model file without them predicts with the plain argmax, as before.

On a frame that resolves single electrons the rule can also veto cluster pixels that hold no
electron (``zero_electron_veto``): truth calls a pixel cluster only when an event left ≥ 1 e⁻ in
it, and at skipper noise an empty pixel is told from a 1-e⁻ one at > 3 σ, so the network's
habit of painting a smooth footprint around a cluster (learnt on noisy frames, where edges
cannot be seen) is undone by the frame's own electron count.

The same count can also add what the network leaves out (``halo_posterior``): on such a frame each
point-like cluster's diffusion profile is fitted (:func:`napari_ccdseg.particles.fit_point_spread`),
and a background pixel next to it becomes cluster when its electron count is likelier to hold some
of that profile's charge than to be dark current alone (:func:`grow_halos`). Under ~1 e⁻/px of dark
current a network calls too few of a cluster's 1–2 e⁻ edge pixels (docs/benchmarks.md section 16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage
from scipy.stats import poisson

from .classes import BACKGROUND, CLUSTER, N_CLASSES, UNLABELLED
from .metrics import cluster_instances
from .particles import STAMP_PX, fit_point_spread, spread_map

if TYPE_CHECKING:
    from .framescale import FrameScale

DECISION_KEY = "decision"
"""Model-file metadata key of the decision rule."""
EMPTY_BELOW_E = 0.5
"""A pixel reading less than this many electrons above its row's zero-electron peak holds none."""
HALO_CONSISTENT_P = 1e-3
"""A pixel whose count dark current plus the fitted halo would reach less often than this holds
something else (another event, a hot pixel): never halo."""
EIGHT = np.ones((3, 3), bool)
OBJECTIVE = "macro F1"
"""What the offsets maximise: the mean pixel F1 of the classes present in the truth, so the cluster
offset cannot buy cluster F1 with hot-pixel or glowing pixels."""


@dataclass(frozen=True)
class OffsetFit:
    """Fitted logit offsets (background fixed at 0) and the objective before and after."""

    offsets: tuple[float, ...]
    score_before: float
    score_after: float
    pixels: int

    def to_metadata(
        self, fitted_on: str, min_cluster_pixels: int = 1, zero_electron_veto: bool = False,
        halo_posterior: float | None = None,
    ) -> dict:
        """The model file's ``decision`` entry: what :meth:`DecisionRule.from_metadata` reads back."""
        return {
            "logit_offsets": [round(v, 4) for v in self.offsets],
            "min_cluster_pixels": min_cluster_pixels,
            "zero_electron_veto": zero_electron_veto,
            "halo_posterior": halo_posterior,
            "objective": OBJECTIVE,
            "score_before": round(self.score_before, 4),
            "score_after": round(self.score_after, 4),
            "pixels": self.pixels,
            "fitted_on": fitted_on,
        }


@dataclass(frozen=True)
class DecisionRule:
    """How logits become classes: offsets added (None: plain argmax); with ``zero_electron_veto``,
    on frames that resolve electrons, cluster pixels below :data:`EMPTY_BELOW_E` given their best
    other class; then cluster components of fewer than ``min_cluster_pixels`` pixels likewise
    (1: none dropped); last, with ``halo_posterior``, on frames that resolve electrons,
    :func:`grow_halos` at that posterior (None: no halo)."""

    offsets: np.ndarray | None = None
    min_cluster_pixels: int = 1
    zero_electron_veto: bool = False
    halo_posterior: float | None = None

    @classmethod
    def from_metadata(cls, metadata: dict) -> DecisionRule:
        """The rule a model's metadata records; the plain argmax when it records none.

        Raises ValueError on a malformed entry, so a model file cannot silently predict wrongly."""
        entry = metadata.get(DECISION_KEY)
        if entry is None:
            return cls()
        if not isinstance(entry, dict):
            raise ValueError(f"'{DECISION_KEY}' must be an object, got {entry!r}")
        values = entry.get("logit_offsets")
        if values is not None and (
            not isinstance(values, list)
            or len(values) != N_CLASSES
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        ):
            raise ValueError(f"'logit_offsets' must be {N_CLASSES} finite numbers, got {values!r}")
        smallest = entry.get("min_cluster_pixels", 1)
        if not isinstance(smallest, int) or isinstance(smallest, bool) or smallest < 1:
            raise ValueError(f"'min_cluster_pixels' must be an integer >= 1, got {smallest!r}")
        veto = entry.get("zero_electron_veto", False)
        if not isinstance(veto, bool):
            raise ValueError(f"'zero_electron_veto' must be true or false, got {veto!r}")
        halo = entry.get("halo_posterior")
        if halo is not None and not (isinstance(halo, (int, float)) and not isinstance(halo, bool) and 0 < halo < 1):
            raise ValueError(f"'halo_posterior' must be null or a number between 0 and 1, got {halo!r}")
        return cls(None if values is None else np.asarray(values, np.float32), smallest, veto,
                   None if halo is None else float(halo))


def decide(logits: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """Class per pixel from logits (classes first); ``offsets`` None is the plain argmax."""
    if offsets is None:
        return logits.argmax(0)
    shape = (-1,) + (1,) * (logits.ndim - 1)
    return (logits + np.asarray(offsets, logits.dtype).reshape(shape)).argmax(0)


def decide_with_fallback(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 class per pixel from (offset) logits, and each pixel's best class other than cluster:
    what the zero-electron veto and the size cut give a cluster pixel they take back."""
    labels = decide(logits).astype(np.uint8)
    fallback = decide(np.delete(logits, CLUSTER, axis=0)).astype(np.uint8)
    fallback[fallback >= CLUSTER] += 1
    return labels, fallback


def macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the classes present in ``truth`` (1-D class indices, no unlabelled pixels)."""
    confusion = np.bincount(truth * N_CLASSES + pred, minlength=N_CLASSES**2).reshape(N_CLASSES, N_CLASSES)
    tp = np.diag(confusion).astype(np.float64)
    support, called = confusion.sum(1), confusion.sum(0)
    present = support > 0
    f1 = 2 * tp[present] / (support[present] + called[present])
    return float(f1.mean()) if f1.size else 0.0


def fit_logit_offsets(
    logits: np.ndarray,
    truth: np.ndarray,
    *,
    start: np.ndarray | None = None,
    span: float = 4.0,
    step: float = 0.05,
    rounds: int = 3,
    classes: tuple[int, ...] = tuple(range(1, N_CLASSES)),
) -> OffsetFit:
    """Offsets maximising :data:`OBJECTIVE` of ``argmax(logits + offsets)`` against ``truth``.

    ``logits``: (classes, pixels) (log-probabilities do as well: a per-pixel constant changes no
    argmax); ``truth``: (pixels,) class indices, unlabelled pixels ignored. Coordinate ascent: each
    round scans the offset of each of ``classes`` (not background: only differences matter) over
    ``start`` ± ``span`` in steps of ``step`` with the others held, keeping the best.
    ``start`` (e.g. minus the log class weights of training) defaults to zeros.
    """
    logits = np.asarray(logits, np.float32).reshape(N_CLASSES, -1)
    truth = np.asarray(truth).reshape(-1)
    keep = truth != UNLABELLED
    logits, truth = logits[:, keep], truth[keep].astype(np.int64)
    offsets = np.zeros(N_CLASSES) if start is None else np.asarray(start, np.float64).copy()
    offsets -= offsets[0]
    before = macro_f1(truth, logits.argmax(0))
    grid = np.arange(-span, span + step / 2, step)
    centre = offsets.copy()
    best = macro_f1(truth, decide(logits, offsets))
    for _ in range(rounds):
        changed = False
        for c in classes:
            others = np.delete(np.arange(N_CLASSES), c)
            shifted = logits[others] + offsets[others, None].astype(np.float32)
            other_class, other_max = others[shifted.argmax(0)], shifted.max(0)
            for value in centre[c] + grid:
                pred = np.where(logits[c] + np.float32(value) > other_max, c, other_class)
                score = macro_f1(truth, pred)
                if score > best + 1e-9:
                    best, offsets[c], changed = score, value, True
        if not changed:
            break
    return OffsetFit(tuple(float(v) for v in offsets), before, best, int(truth.size))


def prior_correction(metadata: dict) -> np.ndarray | None:
    """Minus the log of the loss's class weights (background 0): the offsets that undo the
    weighting if the network had learnt the weighted posteriors exactly; the fit's starting point."""
    weights = metadata.get("class_weights")
    if not isinstance(weights, list) or len(weights) != N_CLASSES or min(weights) <= 0:
        return None
    correction = -np.log(np.asarray(weights, np.float64))
    return correction - correction[0]


def fit_model_offsets(model, metadata: dict, frames, **kwargs) -> OffsetFit:
    """Fit a model's offsets on labelled frames it never trained on (``frames``: objects with
    ``image``, ``labels`` and ``name``, e.g. :class:`~napari_ccdseg.dataset.LabelledFrame`), from its
    raw logits; ``kwargs`` pass to :func:`fit_logit_offsets`."""
    from .predict import predict_frame  # predict imports this module

    logits, truth = [], []
    for frame in frames:
        prediction = predict_frame(model, metadata, frame.image, source=frame.name, probabilities=True, offsets=None,
                                   min_cluster_pixels=1, zero_electron_veto=False, halo_posterior=None)
        logits.append(np.log(np.maximum(prediction.probabilities, 1e-30)).reshape(N_CLASSES, -1))
        truth.append(np.asarray(frame.labels).reshape(-1))
    kwargs.setdefault("start", prior_correction(metadata))
    return fit_logit_offsets(np.concatenate(logits, axis=1), np.concatenate(truth), **kwargs)


def empty_pixels(scale: FrameScale, plane: np.ndarray) -> np.ndarray:
    """Bool map of the pixels of ``plane`` (2-D) reading less than :data:`EMPTY_BELOW_E` above
    their row's zero-electron peak, from the frame's electron ``scale``."""
    return scale.electrons(plane) < EMPTY_BELOW_E


def veto_empty(labels: np.ndarray, fallback: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """``labels`` with cluster pixels that are ``empty`` given their ``fallback`` class (the best
    class other than cluster), in place; returns ``labels``."""
    vetoed = empty & (labels == CLUSTER)
    labels[vetoed] = fallback[vetoed]
    return labels


def drop_small_clusters(labels: np.ndarray, fallback: np.ndarray, min_pixels: int) -> np.ndarray:
    """``labels`` with cluster components (8-connected) of fewer than ``min_pixels`` pixels given
    their ``fallback`` class (the best class other than cluster), in place; returns ``labels``."""
    if min_pixels <= 1:
        return labels
    components = cluster_instances(labels)
    sizes = np.bincount(components.ravel())
    small = (sizes < min_pixels)[components] & (components > 0)
    labels[small] = fallback[small]
    return labels


def halo_posterior_map(counts: np.ndarray, row_dark_e: np.ndarray, expected_e: np.ndarray) -> np.ndarray:
    """Probability that each pixel holds event charge, given its electron count n, its row's dark
    current λ and the event charge μ a fitted profile expects there: with Poisson counts
    P(none | n) = (λ / (λ + μ))ⁿ, so 1 − that (0 where μ = 0 or n = 0). A count that neither
    explains (Poisson chance of ≥ n below :data:`HALO_CONSISTENT_P` at mean λ + μ) is another
    event's or a defect's, not this halo's: 0 too."""
    lam = np.asarray(row_dark_e, np.float64)[:, None]
    mu = np.asarray(expected_e, np.float64)
    n = np.maximum(np.rint(counts), 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        none = np.where(mu > 0, (lam / (lam + mu)) ** n, 1.0)
    posterior = 1.0 - none
    posterior[poisson.sf(n - 1, lam + mu) < HALO_CONSISTENT_P] = 0.0
    return posterior


def grow_halos(
    labels: np.ndarray, electrons: np.ndarray, row_dark_e: np.ndarray, noise_e: float, posterior: float
) -> np.ndarray:
    """``labels`` with the halos of point-like clusters added, in place; returns ``labels``.

    Each cluster component that fits in the spread fit's stamp (a track's profile is no Gaussian)
    gets its pixel-integrated Gaussian fitted to ``electrons`` (the frame in e⁻ above its row
    pedestals); background 8-neighbours of such a cluster whose :func:`halo_posterior_map` reaches
    ``posterior`` become cluster. One pixel deep: farther out the fitted tail is too uncertain (on
    ``damic-m`` frames a second ring added nothing at equal precision). ``row_dark_e``: each row's
    dark current (e⁻/px), from the frame's comb or calibration.
    """
    components = cluster_instances(labels)
    if not components.any():
        return labels
    boxes = ndimage.find_objects(components)
    small = [i + 1 for i, box in enumerate(boxes) if box is not None and max(s.stop - s.start for s in box) <= STAMP_PX]
    if not small:
        return labels
    ids = np.asarray(small, np.int64)
    fit = fit_point_spread(electrons, components, ids, noise_e=noise_e)
    grown = ndimage.binary_dilation(np.isin(components, ids), EIGHT) & (labels == BACKGROUND)
    grown &= halo_posterior_map(electrons, row_dark_e, spread_map(fit, labels.shape)) >= posterior
    labels[grown] = CLUSTER
    return labels


def grow_frame_halos(labels: np.ndarray, scale: FrameScale, plane: np.ndarray, posterior: float) -> np.ndarray:
    """:func:`grow_halos` with the electrons, row dark current and noise of a frame's electron ``scale``
    (``plane``: the 2-D frame); ``labels`` unchanged when the scale has no dark current."""
    if scale.row_dark_e is None:
        return labels
    return grow_halos(labels, scale.electrons(plane), scale.row_dark_e, scale.noise_adu / scale.gain_adu_per_e, posterior)
