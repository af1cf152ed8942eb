"""The one class scheme used by every stage: label maps, losses, reports and napari layers.

Indices and colours follow the original Keras project so that its colour-coded images and
published figures stay comparable. Class statistics of label maps and the loss's class weights
close the module: the auto-label widget shows them, training weights its loss with them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .errors import InputError

BACKGROUND = 0
GLOWING = 1
HOT_PIXEL = 2
CLUSTER = 3
UNLABELLED = 255
"""Pixels no rule claimed; ignored by the loss and by the metrics."""

CLASS_NAMES: tuple[str, ...] = ("background", "glowing", "hot pixel", "cluster")
N_CLASSES = len(CLASS_NAMES)

CLASS_COLOURS: dict[int, tuple[float, float, float]] = {
    BACKGROUND: (0.0, 0.0, 0.0),
    GLOWING: (0.35, 1.0, 0.25),
    HOT_PIXEL: (0.0, 0.5, 1.0),
    CLUSTER: (1.0, 0.2, 0.2),
}


def napari_color_dict() -> dict:
    """RGBA colours for a napari Labels layer: background and unlabelled transparent."""
    colours: dict = {None: (0.0, 0.0, 0.0, 0.0), BACKGROUND: (0.0, 0.0, 0.0, 0.0)}
    for index, rgb in CLASS_COLOURS.items():
        if index != BACKGROUND:
            colours[index] = (*rgb, 1.0)
    colours[UNLABELLED] = (0.0, 0.0, 0.0, 0.0)
    return colours


def labels_layer_kwargs(name: str) -> dict:
    """Keyword arguments for ``viewer.add_labels`` / a Labels LayerData tuple in class colours."""
    from napari.utils.colormaps import DirectLabelColormap  # napari only when a layer is made

    return {
        "name": name,
        "colormap": DirectLabelColormap(color_dict=napari_color_dict()),
        "opacity": 0.7,
        # The status bar then names the class under the cursor while painting.
        "features": {"index": list(range(N_CLASSES)), "class": list(CLASS_NAMES)},
        "metadata": {"ccdseg_classes": list(CLASS_NAMES)},
    }


def colourise(labels: np.ndarray) -> np.ndarray:
    """RGB float image of a label map in class colours (unlabelled shown white), for figures."""
    rgb = np.ones((*labels.shape, 3), dtype=np.float32)
    for index, colour in CLASS_COLOURS.items():
        rgb[labels == index] = colour
    return rgb


CLASS_WEIGHTINGS: tuple[str, ...] = ("inverse", "sqrt", "none")
"""Loss weights from class presence: ``inverse`` (the original project's rule), its square root
(renormalised), or ``none`` (every class 1)."""


@dataclass
class ClassStats:
    """Pixel counts per class over one frame or a dataset; 255 counted apart as unlabelled."""

    counts: np.ndarray
    unlabelled: int = 0

    @property
    def total(self) -> int:
        """Labelled pixels (the base of the percentages; unlabelled ones excluded)."""
        return int(self.counts.sum())

    @property
    def percentages(self) -> np.ndarray:
        """Per class, % of the labelled pixels (all zero when none is labelled)."""
        return self.counts * (100.0 / self.total) if self.total else np.zeros(N_CLASSES)

    def weights(self) -> np.ndarray | None:
        """Inverse-presence weights for display: no warning (an absent class shows its 0), None
        when nothing is labelled."""
        if self.total == 0:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return class_weights(self)

    def table(self) -> str:
        """Markdown table of class, pixels, % and class weight, for reports and the CLI."""
        weights = self.weights()
        lines = ["| class | pixels | % | weight |", "|---|---:|---:|---:|"]
        for index, name in enumerate(CLASS_NAMES):
            weight = "-" if weights is None else f"{weights[index]:.3f}"
            lines.append(
                f"| {name} | {self.counts[index]} | {self.percentages[index]:.2f} | {weight} |"
            )
        lines.append(f"| unlabelled | {self.unlabelled} | - | - |")
        return "\n".join(lines)


def class_stats(label_maps: Iterable[np.ndarray] | np.ndarray) -> ClassStats:
    """Counts over label maps (a single array counts as one map)."""
    if isinstance(label_maps, np.ndarray):
        label_maps = [label_maps]
    counts = np.zeros(N_CLASSES, dtype=np.int64)
    unlabelled = 0
    for index, label_map in enumerate(label_maps):
        histogram = _histogram(label_map, f"label map {index}")
        counts += histogram[:N_CLASSES]
        unlabelled += int(histogram[UNLABELLED])
    return ClassStats(counts, unlabelled)


def _histogram(label_map: np.ndarray, name: str) -> np.ndarray:
    """Counts of values 0..255, refusing values outside the class scheme."""
    flat = np.asarray(label_map).ravel()
    if flat.dtype.kind not in "iu" or (flat.size and (flat.min() < 0 or flat.max() > 255)):
        raise InputError(f"{name}: expected integer class indices 0-{N_CLASSES - 1} or 255")
    histogram = np.bincount(flat.astype(np.intp), minlength=256).astype(np.int64)
    stray = np.flatnonzero(histogram[N_CLASSES:UNLABELLED]) + N_CLASSES
    if stray.size:
        raise InputError(
            f"{name}: values {stray.tolist()} are not classes 0-{N_CLASSES - 1} "
            f"or {UNLABELLED} (unlabelled)"
        )
    return histogram


def class_weights(
    stats_or_label_maps: ClassStats | Iterable[np.ndarray] | np.ndarray, weighting: str = "inverse"
) -> np.ndarray:
    """Loss weights per class, summing to N_CLASSES, by one of :data:`CLASS_WEIGHTINGS`.

    ``inverse`` is the original project's rule (labelled pixels / pixels of the class). A class
    absent from the data gets weight 0 and a warning: the loss then ignores it instead of
    blowing up on an infinite weight.
    """
    if weighting not in CLASS_WEIGHTINGS:
        raise InputError(f"class weighting {weighting!r}: choose one of {', '.join(CLASS_WEIGHTINGS)}")
    if weighting == "none":
        return np.ones(N_CLASSES, np.float32)
    stats = (
        stats_or_label_maps
        if isinstance(stats_or_label_maps, ClassStats)
        else class_stats(stats_or_label_maps)
    )
    if stats.total == 0:
        raise InputError("class weights: no labelled pixel, every pixel is unlabelled (255)")
    present = stats.counts > 0
    for index in np.flatnonzero(~present):
        warnings.warn(
            f"class weights: class '{CLASS_NAMES[index]}' is absent from the labels; weight 0",
            stacklevel=2,
        )
    weights = np.zeros(N_CLASSES)
    weights[present] = stats.total / stats.counts[present]
    if weighting == "sqrt":
        weights = np.sqrt(weights)
    return (weights * (N_CLASSES / weights.sum())).astype(np.float32)
