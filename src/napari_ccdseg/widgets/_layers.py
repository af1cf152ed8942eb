"""Small helpers shared by the widgets: naming conventions, adding layers, watching the layer list.

Naming convention (the same one the reader and the sample data use): an Image layer ``X`` pairs
with Labels layers ``X labels`` (hand or auto labels), ``X truth`` (simulation truth) and
``X prediction`` (a model's output, editable as corrections). ``X`` is the short screen name
(``AMP2 · run15``); the full frame name is ``metadata["ccdseg_frame"]`` (:func:`full_name`).

Placement: every layer derived from an image (labels, prediction, probabilities, clusters, masks)
must sit where the image sits, or a multi-amplifier mosaic shows AMP1's labels over AMP3's pixels.
Pass ``like=image`` to :func:`add_frame` / :func:`set_labels`, or ``**placement_of(image)`` to any
``viewer.add_points`` / ``add_shapes`` / ``add_labels`` call (coordinates in the image's pixels).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels

from .._napari import SIMULATION_TRUTH
from ..classes import labels_layer_kwargs
from ..layout import noise_contrast

if TYPE_CHECKING:
    import napari

LABEL_KINDS: tuple[str, ...] = ("labels", "truth", "prediction")
"""Suffixes of the Labels layers that pair with an image, in order of preference for training."""


def labels_name(image_name: str, kind: str) -> str:
    """``X labels`` / ``X truth`` / ``X prediction`` for image ``X``."""
    return f"{image_name} {kind}"


_COPY = re.compile(r"^(.*)( \[\d+\])$")
"""napari's name for a second layer of an existing name: ``X [1]``, ``X truth [1]``."""


def split_labels_name(name: str) -> tuple[str, str] | None:
    """(image name, kind) of a ``X labels|truth|prediction`` name, or None. A file opened twice
    gives napari's copies ``X [1]`` and ``X truth [1]``: the latter is ``X [1]``'s truth."""
    copy = _COPY.match(name)
    base, copy_suffix = copy.groups() if copy else (name, "")
    for kind in LABEL_KINDS:
        suffix = f" {kind}"
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)] + copy_suffix, kind
    return None


_PLACEMENT_KEY = "ccdseg_placement"


def placement_of(layer) -> dict:
    """``translate`` and ``scale`` of a layer's two frame axes, as keyword arguments for a new layer.

    ``viewer.add_points(coords, **placement_of(image))`` puts points given in the image's pixel
    coordinates on the image, wherever the mosaic placed it (mirrored amplifiers included).
    """
    return {"translate": tuple(float(v) for v in layer.translate[-2:]), "scale": tuple(float(v) for v in layer.scale[-2:])}


def place_like(layer, source) -> None:
    """Move ``layer`` onto ``source``'s placement (and record it, so copies keep it)."""
    placement = placement_of(source)
    layer.scale, layer.translate = placement["scale"], placement["translate"]
    layer.metadata[_PLACEMENT_KEY] = placement


def full_name(layer) -> str:
    """The frame's full name (``run15[AMP2]``, as the CLI names outputs), or the layer name."""
    return str(layer.metadata.get("ccdseg_frame") or layer.name)


def is_simulation_truth(layer) -> bool:
    """A Labels layer holding a simulation's exact truth (``X truth``, or marked so by the reader)."""
    parsed = split_labels_name(layer.name)
    return layer.metadata.get("ccdseg_reference") == SIMULATION_TRUTH or (parsed is not None and parsed[1] == "truth")


def _apply_placement(layer, like, metadata: dict | None) -> None:
    """Place a new or updated layer like ``like``, else as its metadata records (layers read from files)."""
    if like is not None:
        place_like(layer, like)
    elif metadata and _PLACEMENT_KEY in metadata:
        placement = metadata[_PLACEMENT_KEY]
        layer.scale, layer.translate = tuple(placement["scale"]), tuple(placement["translate"])


def image_layers(viewer: napari.Viewer) -> list[Image]:
    """Every Image layer, in layer-list order."""
    return [layer for layer in viewer.layers if isinstance(layer, Image)]


def frame_layers(viewer: napari.Viewer) -> list[Image]:
    """CCD frames: 2-D grey Image layers not derived from another (probability maps name theirs in ``ccdseg_source``)."""
    return [
        layer for layer in image_layers(viewer)
        if not layer.rgb and layer.ndim == 2 and not layer.metadata.get("ccdseg_source")
    ]


def derived_from(viewer: napari.Viewer, image: Image) -> list:
    """Layers made from ``image``: ``<image> labels|truth|prediction|…`` and any naming it in
    ``ccdseg_source`` (napari's copies ``<image> [1]``, ``<image> truth [1]`` belong to the copy)."""

    def made_from(layer) -> bool:
        if layer.metadata.get("ccdseg_source") == image.name:
            return True
        parsed = split_labels_name(layer.name)
        if parsed is not None:
            return parsed[0] == image.name
        return layer.name.startswith(f"{image.name} ") and not _COPY.match(layer.name[len(image.name):])

    return [layer for layer in viewer.layers if layer is not image and made_from(layer)]


def labels_layers(viewer: napari.Viewer) -> list[Labels]:
    """Every Labels layer, in layer-list order."""
    return [layer for layer in viewer.layers if isinstance(layer, Labels)]


def frame_shape(layer: Image) -> tuple[int, int]:
    """Rows and columns of an Image layer (colour images: without the channel axis)."""
    shape = tuple(layer.data.shape)
    return shape[:2] if layer.rgb else shape[-2:]


def paired_labels(viewer: napari.Viewer, image: Image) -> dict[str, Labels]:
    """The ``<image> labels|truth|prediction`` layers (:func:`split_labels_name`) that exist and
    have the image's shape."""
    found = {}
    for layer in labels_layers(viewer):
        parsed = split_labels_name(layer.name)
        if parsed is not None and parsed[0] == image.name and tuple(layer.data.shape) == frame_shape(image):
            found.setdefault(parsed[1], layer)
    return {kind: found[kind] for kind in LABEL_KINDS if kind in found}


CLASS_MAP_KINDS: tuple[str, ...] = ("prediction", "labels", "truth")
"""Which ``<image> <kind>`` Labels layer a class-map picker proposes first for a chosen image."""


def own_class_map(viewer: napari.Viewer, image: Image) -> str | None:
    """The name of the image's own class map, the first of :data:`CLASS_MAP_KINDS` that is a Labels
    layer, to propose when the image is chosen; None when it has none."""
    own: dict[str, str] = {}
    for layer in labels_layers(viewer):
        parsed = split_labels_name(layer.name)
        if parsed is not None and parsed[0] == image.name:
            own.setdefault(parsed[1], layer.name)
    return next((own[kind] for kind in CLASS_MAP_KINDS if kind in own), None)


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


def add_frame(
    viewer: napari.Viewer, name: str, image: np.ndarray, metadata: dict | None = None, like: Image | None = None
) -> Image:
    """Add (or replace the data of) an Image layer with a contrast that shows the noise and faint
    clusters (:func:`napari_ccdseg.layout.noise_contrast`), placed like ``like`` when given."""
    colour = image.ndim == 3
    if name in viewer.layers and isinstance(viewer.layers[name], Image):
        layer = viewer.layers[name]
        layer.data = image
        if not colour:
            layer.contrast_limits = noise_contrast(image)
        layer.metadata.update(metadata or {})
        _apply_placement(layer, like, metadata)
        return layer
    kwargs: dict = {"name": name, "metadata": dict(metadata or {})}
    if colour:
        kwargs["rgb"] = True
    else:
        kwargs["colormap"] = "gray"
        kwargs["contrast_limits"] = noise_contrast(image)
    layer = viewer.add_image(image, **kwargs)
    _apply_placement(layer, like, metadata)
    return layer


def set_labels(
    viewer: napari.Viewer, name: str, data: np.ndarray, metadata: dict | None = None, like: Image | None = None
) -> Labels:
    """Update the Labels layer ``name`` in place (keeps its position and the user's settings)
    or add it in class colours, background transparent; placed like ``like`` when given."""
    data = np.asarray(data, dtype=np.uint8)
    if name in viewer.layers:
        layer = viewer.layers[name]
        if isinstance(layer, Labels) and layer.data.shape == data.shape:
            layer.data = data
            layer.metadata.update(metadata or {})
            _apply_placement(layer, like, metadata)
            return layer
        viewer.layers.remove(layer)
    kwargs = labels_layer_kwargs(name)
    kwargs["metadata"] = {**kwargs["metadata"], **(metadata or {})}
    layer = viewer.add_labels(data, **kwargs)
    _apply_placement(layer, like, metadata)
    return layer


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
