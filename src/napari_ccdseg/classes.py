"""The one class scheme used by every stage: label maps, losses, reports and napari layers.

Indices and colours follow the original Keras project so that its colour-coded images and
published figures stay comparable.
"""

from __future__ import annotations

import numpy as np

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
