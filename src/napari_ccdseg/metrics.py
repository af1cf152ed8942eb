"""Numbers that say how good a segmentation is, at pixel level and at cluster level.

Pixel figures (precision, recall, F1, support per class) are scikit-learn's classification report,
as the original project printed them. Physicists care about clusters, though: how many true
clusters a model finds (detection efficiency), how that depends on their charge, and how many
clusters it invents (fakes per megapixel). :func:`evaluate` returns them as typed dataclasses
(:class:`Evaluation`, with one ``to_json()``); :mod:`report_text` renders them as text.

Pooled pixel figures are computed from a confusion matrix accumulated frame by frame, so an
evaluation over many 6k × 6k frames never holds more than one frame's pixels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as graph_components
from sklearn.metrics import classification_report

from .classes import CLASS_NAMES, CLUSTER, N_CLASSES
from .errors import InputError
from .noise import pedestal_noise

FOUND_COVERAGE = 0.5
"""Share of a true cluster's pixels that predicted cluster pixels must cover for it to be found.

Half, because at that point the prediction unambiguously locates the cluster and holds most of its
charge, while disagreement on its faint edge pixels (which sit at the noise level, where even the
threshold-derived truth is uncertain) does not count as a miss. A lower share would credit one
touched pixel of a 100-pixel muon track as a detection; a higher one would punish edges that do
not change what a physicist reconstructs.
"""

_OTHER = N_CLASSES
"""Confusion column for predicted values outside the classes (e.g. 255 in a preset's label map)."""

_BINS_PER_DECADE = 4
_CHUNK = 1 << 20


def _check_same_shape(named: dict[str, np.ndarray | None], where: str) -> None:
    """Raise InputError naming the arrays whose (row, column) sizes differ."""
    shapes = {name: np.shape(array)[:2] for name, array in named.items() if array is not None}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape[0]}×{shape[1]}" for name, shape in shapes.items())
        raise InputError(f"{where}: sizes differ ({listed})")


def confusion_counts(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pixel counts, rows truth class, columns predicted class plus one 'other' column.

    Unlabelled truth pixels are left out; the extra column keeps predictions outside the classes
    in each class's support (they are errors) without inventing a class for them. Counted in
    chunks so a 6k × 6k frame needs no frame-sized 64-bit copies.
    """
    _check_same_shape({"truth": truth, "prediction": pred}, "pixel report")
    truth = np.asarray(truth).ravel()
    pred = np.asarray(pred).ravel()
    counts = np.zeros(N_CLASSES * (N_CLASSES + 1), dtype=np.int64)
    for start in range(0, truth.size, _CHUNK):
        counts += _chunk_counts(truth[start : start + _CHUNK], pred[start : start + _CHUNK])
    return counts.reshape(N_CLASSES, N_CLASSES + 1)


def _chunk_counts(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Flattened confusion counts of one chunk of pixels."""
    keep = (truth >= 0) & (truth < N_CLASSES)  # drops UNLABELLED and anything else unknown
    truth = truth[keep].astype(np.int64)
    pred = pred[keep].astype(np.int64)
    pred[(pred < 0) | (pred >= N_CLASSES)] = _OTHER
    return np.bincount(truth * (N_CLASSES + 1) + pred, minlength=N_CLASSES * (N_CLASSES + 1))


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall, F1 and support (labelled truth pixels) of one class or an average."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class PixelScores:
    """scikit-learn's classification report of the labelled pixels, and their confusion matrix."""

    classes: dict[str, ClassScores]
    """Per class name, in the order of ``classes.CLASS_NAMES``."""
    macro: ClassScores
    weighted: ClassScores
    """Averages over the classes, plain and weighted by support (the number of labelled pixels)."""
    accuracy: float
    confusion: list[list[int]]
    """Pixel counts, rows truth class, columns predicted class."""

    @property
    def cluster(self) -> ClassScores:
        return self.classes[CLASS_NAMES[CLUSTER]]


def report_from_confusion(confusion: np.ndarray) -> PixelScores:
    """scikit-learn's classification report of the pixels a confusion_counts matrix counts.

    Each matrix cell is passed once with its count as sample weight, which gives the same numbers
    as passing every pixel, at no memory cost. The confusion kept drops the 'other' column.
    """
    total = int(confusion.sum())
    if total == 0:
        raise InputError("pixel report: no labelled pixels (every truth pixel is unlabelled)")
    truth_index, pred_index = np.nonzero(confusion)
    report = classification_report(
        truth_index,
        pred_index,
        labels=list(range(N_CLASSES)),
        target_names=list(CLASS_NAMES),
        sample_weight=confusion[truth_index, pred_index],
        output_dict=True,
        zero_division=0,
    )

    def scores(row: dict) -> ClassScores:
        return ClassScores(float(row["precision"]), float(row["recall"]), float(row["f1-score"]), int(round(row["support"])))

    return PixelScores(
        classes={name: scores(report[name]) for name in CLASS_NAMES},
        macro=scores(report["macro avg"]),
        weighted=scores(report["weighted avg"]),
        accuracy=float(np.trace(confusion[:, :N_CLASSES]) / total),
        confusion=confusion[:, :N_CLASSES].astype(int).tolist(),
    )


def pixel_report(truth: np.ndarray, pred: np.ndarray) -> PixelScores:
    """Per-class precision/recall/F1/support, accuracy and confusion (rows truth) of one pair of maps.

    Only pixels whose truth is labelled count; classes absent from both maps score 0, not an error.
    """
    return report_from_confusion(confusion_counts(truth, pred))


def cluster_instances(labels: np.ndarray) -> np.ndarray:
    """Cluster instances (8-connected components of the cluster class) when no truth map has them.

    8-connectivity because diffusion and diagonal tracks join clusters through pixel corners.
    """
    return connected_components(np.asarray(labels) == CLUSTER)


_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


def connected_components(mask: np.ndarray) -> np.ndarray:
    """int32 ids 1…N of the 8-connected components of a boolean mask (0 outside), numbered in
    raster order of each component's first pixel (as skimage's ``label``, which calls the same
    scipy function for boolean masks), written as int32 without a copy."""
    components, _ = ndimage.label(mask, structure=_EIGHT_NEIGHBOURS, output=np.int32)
    return components


@dataclass
class ClusterMatch:
    """How one frame's predicted clusters meet its true clusters."""

    found: np.ndarray
    """Per true cluster: predicted cluster pixels cover at least the coverage share of it."""
    charges: np.ndarray
    """Per true cluster: sum of the image over its pixels, or its pixel count with no image."""
    n_fake: int
    """Predicted cluster components (8-connected) touching no true cluster pixel."""
    n_pixels: int
    """Frame size in pixels, for rates per megapixel."""
    sizes: np.ndarray
    """Per true cluster: its pixel count."""
    n_predicted: int
    """Predicted cluster components (8-connected)."""


def match_clusters(
    truth_instances: np.ndarray,
    pred_labels: np.ndarray,
    image: np.ndarray | None = None,
    coverage: float = FOUND_COVERAGE,
) -> ClusterMatch:
    """Match a frame's true cluster instances (ids > 0) with its predicted cluster pixels.

    Each true cluster is judged on its own, so a prediction that merges two touching clusters
    finds both; the image, if given, should be 2-D and pedestal-subtracted for charges to mean
    anything.
    """
    _check_same_shape(
        {"truth instances": truth_instances, "prediction": pred_labels, "image": image},
        "cluster match",
    )
    instances = np.asarray(truth_instances)
    predicted = np.asarray(pred_labels) == CLUSTER
    in_cluster = instances > 0
    _, inverse = np.unique(instances[in_cluster], return_inverse=True)
    sizes = np.bincount(inverse)
    covered = np.bincount(inverse, weights=predicted[in_cluster], minlength=sizes.size)
    # covered / sizes rounds like the literal coverage, so an exact share sits on the boundary.
    found = covered / np.maximum(sizes, 1) >= coverage
    if image is None:
        charges = sizes.astype(np.float64)
    else:
        values = np.asarray(image, np.float64)[in_cluster]
        charges = np.bincount(inverse, weights=values, minlength=sizes.size)
    components = connected_components(predicted)
    touched = np.unique(components[in_cluster & predicted])
    n_predicted = int(components.max())
    return ClusterMatch(
        found=found,
        charges=charges,
        n_fake=n_predicted - touched.size,
        n_pixels=int(instances.size),
        sizes=sizes,
        n_predicted=n_predicted,
    )


def charge_bin_edges(charges: np.ndarray) -> np.ndarray:
    """Log-spaced bin edges, four per decade on decade boundaries, covering the positive charges.

    Fixed boundaries (…, 10, 17.8, 31.6, 56.2, 100, …) keep curves of different runs comparable.
    """
    positive = charges[charges > 0]
    if positive.size == 0:
        return np.array([], dtype=np.float64)
    low = np.floor(_BINS_PER_DECADE * np.log10(positive.min()))
    high = np.floor(_BINS_PER_DECADE * np.log10(positive.max())) + 1
    return 10.0 ** (np.arange(low, high + 1) / _BINS_PER_DECADE)


@dataclass(frozen=True)
class ChargeBins:
    """Detection efficiency per log charge bin: ``efficiency[i]`` is None where bin i is empty."""

    bin_edges: list[float]
    counts: list[int]
    found: list[int]
    efficiency: list[float | None]


def efficiency_vs_charge(found: np.ndarray, charges: np.ndarray) -> ChargeBins:
    """Clusters, found clusters and efficiency per log charge bin.

    Clusters with charge ≤ 0 (possible in noisy ADU frames) have no place on a log axis and are
    left out here, though they count in the overall efficiency.
    """
    edges = charge_bin_edges(charges)
    if edges.size == 0:
        return ChargeBins([], [], [], [])
    counts, _ = np.histogram(charges, bins=edges)
    hits, _ = np.histogram(charges[found], bins=edges)
    efficiency = [float(h / n) if n else None for h, n in zip(hits, counts)]
    return ChargeBins(edges.tolist(), counts.tolist(), hits.tolist(), efficiency)


@dataclass(frozen=True)
class ClusterScores:
    """Cluster detection over all frames: found = predicted cluster pixels cover ``coverage`` of it."""

    coverage: float
    n_true: int
    n_found: int
    n_predicted: int
    n_fake: int
    """Predicted clusters touching no true cluster pixel."""
    efficiency: float | None
    """n_found / n_true; None without true clusters."""
    fakes_per_megapixel: float
    megapixels: float
    charge_unit: str
    """``image units`` (pedestal-subtracted sums) or ``pixels`` (sizes, when a frame has no 2-D image)."""
    efficiency_vs_charge: ChargeBins


@dataclass(frozen=True)
class FrameScores:
    """The handful of numbers per frame that tell which frames a model struggles with."""

    name: str
    index: int
    shape: tuple[int, int]
    labelled_pixels: int
    accuracy: float | None
    cluster_f1: float | None
    n_true: int
    n_found: int
    n_fake: int
    efficiency: float | None


@dataclass(frozen=True)
class Evaluation:
    """Pixel and cluster figures over frames, each frame's own figures, and evaluations of other
    labels of the same frames to compare with (``baselines``, e.g. a threshold preset)."""

    pixel: PixelScores
    clusters: ClusterScores
    frames: list[FrameScores]
    baselines: dict[str, Evaluation] = field(default_factory=dict)

    def to_json(self) -> dict:
        """Plain JSON types (report.json): the pixel report in scikit-learn's layout ('f1-score',
        'macro avg', ...) as the original project printed it, the rest field by field."""

        def row(scores: ClassScores) -> dict:
            return {"precision": scores.precision, "recall": scores.recall, "f1-score": scores.f1, "support": scores.support}

        pixel = self.pixel
        return {
            "pixel": {
                **{name: row(scores) for name, scores in pixel.classes.items()},
                "macro avg": row(pixel.macro),
                "weighted avg": row(pixel.weighted),
                "accuracy": pixel.accuracy,
                "confusion": pixel.confusion,
            },
            "clusters": asdict(self.clusters),
            "frames": [asdict(frame) for frame in self.frames],
            "baselines": {name: baseline.to_json() for name, baseline in self.baselines.items()},
        }


def _cluster_f1(confusion: np.ndarray) -> float | None:
    """Pixel F1 of the cluster class from a confusion matrix; None when neither map has clusters."""
    true_positive = confusion[CLUSTER, CLUSTER]
    false_negative = confusion[CLUSTER].sum() - true_positive
    false_positive = confusion[:, CLUSTER].sum() - true_positive
    denominator = 2 * true_positive + false_negative + false_positive
    return float(2 * true_positive / denominator) if denominator else None


def _frame_scores(name: str, index: int, confusion: np.ndarray, match: ClusterMatch, shape: tuple) -> FrameScores:
    labelled = int(confusion.sum())
    n_true = int(match.found.size)
    n_found = int(match.found.sum())
    return FrameScores(
        name=name,
        index=index,
        shape=(int(shape[0]), int(shape[1])),
        labelled_pixels=labelled,
        accuracy=float(np.trace(confusion[:, :N_CLASSES]) / labelled) if labelled else None,
        cluster_f1=_cluster_f1(confusion),
        n_true=n_true,
        n_found=n_found,
        n_fake=match.n_fake,
        efficiency=n_found / n_true if n_true else None,
    )


def _charge_image(image: np.ndarray | None) -> np.ndarray | None:
    """Pedestal-subtracted 2-D image for charges; None for no image or a colour rendering."""
    if image is None or np.ndim(image) != 2:
        return None
    pedestal, _ = pedestal_noise(image)
    return np.asarray(image, np.float64) - pedestal


class Sample(NamedTuple):
    """One frame to score. ``image`` None (or a colour rendering) measures clusters in pixels;
    ``instances`` None takes the truth's cluster components; ``name`` empty: its index."""

    image: np.ndarray | None
    truth: np.ndarray
    instances: np.ndarray | None
    prediction: np.ndarray
    name: str = ""


def evaluate(samples: Iterable[Sample | tuple], coverage: float = FOUND_COVERAGE) -> Evaluation:
    """Pixel and cluster figures over frames of (image, truth labels, truth instances, prediction[, name]).

    Charges are image sums after subtracting the frame's median pedestal, so raw ADU frames give
    meaningful charges; if any frame lacks a 2-D image, every cluster is measured by its size in
    pixels instead, so one axis never mixes units. Frames are read one at a time (``samples`` may
    be a generator), so only one frame's maps need be in memory.
    """
    confusion = np.zeros((N_CLASSES, N_CLASSES + 1), dtype=np.int64)
    found, charges, sizes, frames = [], [], [], []
    n_fake = n_pixels = n_predicted = 0
    all_have_images = True
    for index, sample in enumerate(samples):
        image, truth, instances, pred, name = Sample(*sample)
        arrays = {"image": image, "truth": truth, "instances": instances, "prediction": pred}
        _check_same_shape(arrays, name or f"frame {index}")
        frame_confusion = confusion_counts(truth, pred)
        charge_image = _charge_image(image)
        all_have_images &= charge_image is not None
        if instances is None:
            instances = cluster_instances(truth)
        match = match_clusters(instances, pred, charge_image, coverage)
        confusion += frame_confusion
        found.append(match.found)
        charges.append(match.charges)
        sizes.append(match.sizes)
        n_fake += match.n_fake
        n_pixels += match.n_pixels
        n_predicted += match.n_predicted
        frames.append(_frame_scores(name or str(index), index, frame_confusion, match, np.shape(truth)))
    if not frames:
        raise InputError("evaluation: no frames to evaluate")
    found_all = np.concatenate(found)
    measure = np.concatenate(charges if all_have_images else sizes).astype(np.float64)
    n_true = int(found_all.size)
    n_found = int(found_all.sum())
    clusters = ClusterScores(
        coverage=coverage,
        n_true=n_true,
        n_found=n_found,
        n_predicted=n_predicted,
        n_fake=n_fake,
        efficiency=n_found / n_true if n_true else None,
        fakes_per_megapixel=n_fake / (n_pixels / 1e6),
        megapixels=n_pixels / 1e6,
        charge_unit="image units" if all_have_images else "pixels",
        efficiency_vs_charge=efficiency_vs_charge(found_all, measure),
    )
    return Evaluation(report_from_confusion(confusion), clusters, frames)


def _centroids(components: np.ndarray, ids: np.ndarray) -> list[list[float]]:
    """[row, column] centroid of each listed component, so a viewer can jump to it."""
    if ids.size == 0:
        return []
    rows, cols = np.nonzero(components)
    owner = components[rows, cols]
    count = np.bincount(owner)
    mean_row = np.bincount(owner, weights=rows) / np.maximum(count, 1)
    mean_col = np.bincount(owner, weights=cols) / np.maximum(count, 1)
    return [[round(float(mean_row[i]), 1), round(float(mean_col[i]), 1)] for i in ids]


def _lonely(components: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Ids of the components that share no pixel with the other map's cluster pixels."""
    touched = np.unique(components[other & (components > 0)])
    return np.setdiff1d(np.arange(1, components.max() + 1), touched)


def _matched_groups(components_a: np.ndarray, components_b: np.ndarray, n_lonely: int) -> int:
    """Groups of clusters linked by overlap across the maps, each counted once.

    A blob of one map that spans three clusters of the other is one cluster both maps saw, not
    three, so merges and splits do not inflate agreement.
    """
    n_a, n_b = int(components_a.max()), int(components_b.max())
    overlap = (components_a > 0) & (components_b > 0)
    edges = np.unique(np.stack([components_a[overlap], components_b[overlap]]), axis=1)
    graph = coo_matrix(
        (np.ones(edges.shape[1]), (edges[0] - 1, edges[1] - 1 + n_a)), shape=(n_a + n_b,) * 2
    )
    return int(graph_components(graph, directed=False)[0]) - n_lonely


def compare_clusters(labels_a: np.ndarray, labels_b: np.ndarray) -> dict:
    """How two label maps of one frame agree on clusters, when there is no truth to judge either.

    A cluster component (8-connected) of one map is shared when it touches any cluster pixel of
    the other: with no truth, neither map's extent is right, so any overlap means both saw it.
    ``both`` counts groups of overlapping components (one merged blob counts once), so
    ``agreement`` = both / (both + only_a + only_b), the share of all distinct clusters that both
    maps found; ``both_a`` and ``both_b`` are each map's shared components. ``iou`` compares
    cluster pixels. Agreement and iou are 1 when neither map has clusters. Positions of the
    clusters only one map found are [row, column] centroids.
    """
    _check_same_shape({"labels a": labels_a, "labels b": labels_b}, "cluster comparison")
    mask_a = np.asarray(labels_a) == CLUSTER
    mask_b = np.asarray(labels_b) == CLUSTER
    components_a = connected_components(mask_a)
    components_b = connected_components(mask_b)
    only_a = _lonely(components_a, mask_b)
    only_b = _lonely(components_b, mask_a)
    n_a, n_b = int(components_a.max()), int(components_b.max())
    both = _matched_groups(components_a, components_b, only_a.size + only_b.size)
    distinct = both + only_a.size + only_b.size
    union = int((mask_a | mask_b).sum())
    return {
        "n_a": n_a,
        "n_b": n_b,
        "both": both,
        "both_a": n_a - int(only_a.size),
        "both_b": n_b - int(only_b.size),
        "only_a": int(only_a.size),
        "only_b": int(only_b.size),
        "agreement": both / distinct if distinct else 1.0,
        "iou": int((mask_a & mask_b).sum()) / union if union else 1.0,
        "only_a_positions": _centroids(components_a, only_a),
        "only_b_positions": _centroids(components_b, only_b),
    }


_AGREEMENT_KEYS = {
    "model": "n_a",
    "physical": "n_b",
    "both": "both",
    "both_model": "both_a",
    "both_physical": "both_b",
    "only_model": "only_a",
    "only_physical": "only_b",
}
"""Row keys of an agreement summary, from compare_clusters(model, physical) keys."""


def agreement_summary(comparisons: Iterable[tuple[str, dict]]) -> dict:
    """Per-frame and total cluster agreement of a model with the physical preset.

    ``comparisons`` are (frame name, compare_clusters(model labels, physical labels)). Totals
    add the counts; the total agreement is summed both over summed distinct clusters, so big
    frames weigh more than small ones.
    """
    frames = []
    for name, comparison in comparisons:
        row = {"frame": name, **{key: comparison[source] for key, source in _AGREEMENT_KEYS.items()}}
        row["agreement"] = comparison["agreement"]
        row["pixel_iou"] = comparison["iou"]
        row["only_model_positions"] = comparison["only_a_positions"]
        row["only_physical_positions"] = comparison["only_b_positions"]
        frames.append(row)
    if not frames:
        raise InputError("agreement: no frames to compare")
    total = {key: sum(row[key] for row in frames) for key in _AGREEMENT_KEYS}
    distinct = total["both"] + total["only_model"] + total["only_physical"]
    total["agreement"] = total["both"] / distinct if distinct else 1.0
    return {"frames": frames, "total": total}
