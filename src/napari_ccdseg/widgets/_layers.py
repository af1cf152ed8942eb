"""Small helpers shared by the widgets: naming conventions, adding layers, watching the layer list.

Naming convention (the same one the reader and the sample data use): an Image layer ``X`` pairs
with Labels layers ``X labels`` (hand or auto labels), ``X truth`` (simulation truth) and
``X prediction`` (a model's output, editable as corrections).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels

from ..noise import display_range
from ..classes import labels_layer_kwargs

if TYPE_CHECKING:
    import napari

LABEL_KINDS: tuple[str, ...] = ("labels", "truth", "prediction")
"""Suffixes of the Labels layers that pair with an image, in order of preference for training."""


def labels_name(image_name: str, kind: str) -> str:
    """``X labels`` / ``X truth`` / ``X prediction`` for image ``X``."""
    return f"{image_name} {kind}"


def split_labels_name(name: str) -> tuple[str, str] | None:
    """(image name, kind) of a ``X labels|truth|prediction`` name, or None."""
    for kind in LABEL_KINDS:
        suffix = f" {kind}"
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], kind
    return None


def image_layers(viewer: napari.Viewer) -> list[Image]:
    """Every Image layer, in layer-list order."""
    return [layer for layer in viewer.layers if isinstance(layer, Image)]


def labels_layers(viewer: napari.Viewer) -> list[Labels]:
    """Every Labels layer, in layer-list order."""
    return [layer for layer in viewer.layers if isinstance(layer, Labels)]


def frame_shape(layer: Image) -> tuple[int, int]:
    """Rows and columns of an Image layer (colour images: without the channel axis)."""
    shape = tuple(layer.data.shape)
    return shape[:2] if layer.rgb else shape[-2:]


def paired_labels(viewer: napari.Viewer, image: Image) -> dict[str, Labels]:
    """The ``<image> labels|truth|prediction`` layers that exist and have the image's shape."""
    found = {}
    for kind in LABEL_KINDS:
        name = labels_name(image.name, kind)
        if name in viewer.layers:
            layer = viewer.layers[name]
            if isinstance(layer, Labels) and tuple(layer.data.shape) == frame_shape(image):
                found[kind] = layer
    return found


def unique_prefix_index(viewer: napari.Viewer, prefix: str, count: int) -> int:
    """First index i such that ``prefix i`` ... ``prefix i+count-1`` are all free layer names."""
    names = {layer.name for layer in viewer.layers}
    start = 0
    while any(
        name in names
        for i in range(start, start + count)
        for name in (f"{prefix} {i}", *(labels_name(f"{prefix} {i}", k) for k in LABEL_KINDS))
    ):
        start += 1
    return start


def add_frame(viewer: napari.Viewer, name: str, image: np.ndarray, metadata: dict | None = None) -> Image:
    """Add (or replace the data of) an Image layer with robust contrast limits."""
    colour = image.ndim == 3
    if name in viewer.layers and isinstance(viewer.layers[name], Image):
        layer = viewer.layers[name]
        layer.data = image
        if not colour:
            layer.contrast_limits = display_range(image)
        layer.metadata.update(metadata or {})
        return layer
    kwargs: dict = {"name": name, "metadata": dict(metadata or {})}
    if colour:
        kwargs["rgb"] = True
    else:
        kwargs["colormap"] = "gray"
        kwargs["contrast_limits"] = display_range(image)
    return viewer.add_image(image, **kwargs)


def set_labels(
    viewer: napari.Viewer, name: str, data: np.ndarray, metadata: dict | None = None
) -> Labels:
    """Update the Labels layer ``name`` in place (keeps its position and the user's settings)
    or add it in class colours, background transparent."""
    data = np.asarray(data, dtype=np.uint8)
    if name in viewer.layers:
        layer = viewer.layers[name]
        if isinstance(layer, Labels) and layer.data.shape == data.shape:
            layer.data = data
            layer.metadata.update(metadata or {})
            return layer
        viewer.layers.remove(layer)
    kwargs = labels_layer_kwargs(name)
    kwargs["metadata"] = {**kwargs["metadata"], **(metadata or {})}
    return viewer.add_labels(data, **kwargs)


def watch_layers(viewer: napari.Viewer, callback: Callable[[], None]) -> None:
    """Call ``callback`` whenever layers are added, removed, moved or renamed.

    napari holds bound methods weakly and drops callbacks of deleted Qt widgets, so a closed
    widget needs no explicit disconnection.
    """

    def connect_name(layer) -> None:
        layer.events.name.connect(callback)

    def on_inserted(event) -> None:
        connect_name(event.value)
        callback()

    for layer in viewer.layers:
        connect_name(layer)
    viewer.layers.events.inserted.connect(on_inserted)
    viewer.layers.events.removed.connect(callback)
    viewer.layers.events.moved.connect(callback)
    viewer.layers.events.reordered.connect(callback)
