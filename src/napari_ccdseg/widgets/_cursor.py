"""The status bar under the cursor: which amplifier, ADU and electrons, class and cluster id.

napari's own status shows the selected layer's value only, in ADU. On a mosaic of amplifiers the
pixel under the cursor belongs to whichever frame is drawn there, so :func:`cursor_report` looks
for it among the visible frames (top first), then reads its paired label layers at the same pixel.
Over a point of the active Points layer (a ring of the cluster catalogue) napari's own status
stays: it lists that point's features (particle type, energy, size).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Labels, Points

from ..classes import CLASS_NAMES, CLUSTER
from ..layout import detector_pixel
from ..metrics import cluster_instances
from ._layers import frame_layers, paired_labels

if TYPE_CHECKING:
    import napari

_INSTANCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_INSTALLED: weakref.WeakSet = weakref.WeakSet()


def electrons_at(calibration: dict, row: int, adu: float) -> float:
    """A pixel value in electrons: minus its row's zero-electron pedestal, over the gain (as Calibration.electrons)."""
    pedestals = calibration.get("row_pedestal_adu") or []
    pedestal = pedestals[row] if 0 <= row < len(pedestals) and pedestals[row] is not None else calibration["pedestal_adu"]
    return (adu - float(pedestal)) / float(calibration["gain_adu_per_e"])


def cluster_id(layer: Labels, row: int, col: int) -> int:
    """The 8-connected cluster id at a pixel of a class map (0 off clusters), computed once per edit.

    Truth from the simulator carries its own instance ids (``ccdseg_instances``); those win.
    """
    given = layer.metadata.get("ccdseg_instances")
    if given is not None and np.shape(given) == layer.data.shape:
        return int(np.asarray(given)[row, col])
    if layer not in _INSTANCES:
        _INSTANCES[layer] = cluster_instances(np.asarray(layer.data))
        forget = lambda *_: _INSTANCES.pop(layer, None)  # noqa: E731 - one line, bound to this layer
        layer.events.data.connect(forget)
        layer.events.paint.connect(forget)
    return int(_INSTANCES[layer][row, col])


def cursor_report(viewer: napari.Viewer, world) -> str | None:
    """``AMP2 · run15 [r, c] (detector x 2049, y 17): 25043.0 ADU = 1.02 e⁻ · prediction: cluster #7``
    for the frame under ``world`` (a viewer position), or None when no frame is there. The detector
    position (ds9's, 1-based) comes from DETSEC where the header has one."""
    for layer in reversed(frame_layers(viewer)):
        if not layer.visible:
            continue
        row, col = (int(v) for v in np.round(np.asarray(layer.world_to_data(world))[-2:]))
        rows, cols = layer.data.shape[-2:]
        if not (0 <= row < rows and 0 <= col < cols):
            continue
        adu = float(layer.data[row, col])
        text = f"{layer.name} [{row}, {col}]"
        detector = detector_pixel(layer.metadata.get("header") or {}, (rows, cols), row, col)
        if detector is not None:
            text += f" (detector x {detector[0]}, y {detector[1]})"
        text += f": {adu:.1f} ADU"
        calibration = layer.metadata.get("calibration")
        if calibration:
            text += f" = {electrons_at(calibration, row, adu):.2f} e⁻"
        for kind, labels in paired_labels(viewer, layer).items():
            value = int(labels.data[row, col])
            name = CLASS_NAMES[value] if value < len(CLASS_NAMES) else "unlabelled"
            text += f" · {kind}: {name}"
            if value == CLUSTER:
                text += f" #{cluster_id(labels, row, col)}"
        return text
    return None


def point_under_cursor(viewer: napari.Viewer) -> bool:
    """Whether the active layer is a Points layer with a point under the cursor."""
    active = viewer.layers.selection.active
    if not isinstance(active, Points) or not active.visible:
        return False
    index = active.get_value(
        viewer.cursor.position, view_direction=viewer.cursor._view_direction,
        dims_displayed=list(viewer.dims.displayed), world=True,
    )
    return index is not None


def install_status(viewer: napari.Viewer) -> None:
    """Show :func:`cursor_report` in the status bar whenever the cursor is over a frame (once per viewer).

    napari computes the status in ``ViewerModel._calc_status_from_cursor``, from a background
    thread when a Qt window exists (napari >= 0.5), on the cursor event otherwise; this wraps that
    method of this viewer, so both paths show the report, and napari's own status elsewhere and
    over a point of the active Points layer (its features).
    """
    viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugin widgets a public-only proxy
    if viewer in _INSTALLED:
        return
    _INSTALLED.add(viewer)
    ref = weakref.ref(viewer)
    napari_status = viewer._calc_status_from_cursor

    def status_from_cursor():
        result = napari_status()
        current = ref()
        if current is None or result is None:  # None: the mouse is off the canvas, nothing to update
            return result
        try:
            if point_under_cursor(current):
                return result
            text = cursor_report(current, current.cursor.position)
        except (IndexError, ValueError, RuntimeError):  # layers changed while the status thread read them
            return result
        if text is None:
            return result
        return text, result[1]

    object.__setattr__(viewer, "_calc_status_from_cursor", status_from_cursor)
