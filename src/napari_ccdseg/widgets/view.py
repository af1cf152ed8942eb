"""View widget: how frames look on screen, never what they hold.

- Row 0 at the bottom (the ds9 way) or at the top (napari's): the camera turns, the data and
  every saved label map stay as they are.
- Contrast of every CCD frame: the noise and faint clusters (pedestal − 3 σ … + 20 σ, the default
  on opening), electrons 0 … N above the pedestal (calibrated frames), or 0.5–99.5 percentiles.
- One amplifier alone (with the layers made from it), or all of them side by side again.
- A calibration file (``ccdseg calibrate`` writes one) attached to the frames it belongs to, so
  the status bar and the electron contrast can show electrons.
- FITS files opened by this plugin without napari's reader dialog: npe2 has no way for a plugin
  to declare itself the preferred reader, so a button writes the user's napari setting
  ``plugins.extension2reader`` for the FITS patterns (what the dialog's "remember" box does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image
from qtpy.QtWidgets import QCheckBox, QFormLayout, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from ..errors import InputError
from ..layout import electron_contrast, noise_contrast
from ..noise import display_range
from ._common import LayerCombo, PathEdit, combo, dspin, report_error, wrapped_label
from ._cursor import install_status
from ._layers import derived_from, frame_layers

PLUGIN = "napari-ccdseg"
FITS_PATTERNS_PREFIX = ("*.fits", "*.fit", "*.fts", "*.fz")


def fits_patterns() -> list[str]:
    """The FITS file patterns this plugin's reader claims, from its manifest."""
    from npe2 import PluginManifest

    readers = PluginManifest.from_distribution(PLUGIN).contributions.readers or []
    return [p for r in readers for p in r.filename_patterns if p.startswith(FITS_PATTERNS_PREFIX)]


def prefer_for_fits() -> list[str]:
    """Make this plugin napari's reader for FITS files (a user setting, saved); returns the patterns."""
    from napari.settings import get_settings

    patterns = fits_patterns()
    settings = get_settings().plugins
    settings.extension2reader = {**settings.extension2reader, **{p: PLUGIN for p in patterns}}
    return patterns


CONTRASTS = ("noise: pedestal −3σ … +20σ", "electrons: 0 … N e⁻", "percentiles 0.5 … 99.5 %")
ALL_AMPLIFIERS = "all, side by side"


def camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def set_ds9_orientation(viewer, ds9: bool) -> None:
    """Row 0 at the bottom (``ds9``) or at the top, by turning the 2-D camera only (napari >= 0.6)."""
    camera(viewer).orientation2d = ("up" if ds9 else "down", "right")


def ds9_orientation(viewer) -> bool:
    """True when row 0 is drawn at the bottom."""
    return getattr(camera(viewer), "orientation2d", ("down",))[0] == "up"


class ViewWidget(QWidget):
    """Orientation, contrast presets, one amplifier alone (layers added meanwhile follow it), calibrations: display settings only."""

    def __init__(self, napari_viewer, parent=None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        install_status(napari_viewer)
        self.ds9 = QCheckBox("Row 0 at the bottom (as ds9)")
        self.ds9.setToolTip("turns the view only: the data and saved label maps keep row 0 first")
        self.ds9.setChecked(ds9_orientation(napari_viewer))
        self.ds9.toggled.connect(lambda on: set_ds9_orientation(self.viewer, on))
        if not hasattr(camera(napari_viewer), "orientation2d"):
            self.ds9.setEnabled(False)
            self.ds9.setToolTip("needs napari 0.6 or later")
        self.contrast = combo(CONTRASTS, CONTRASTS[0], "contrast of every CCD frame")
        self.top_electrons = dspin(10.0, 0.5, 1e6, "top of the electron scale (e⁻ above the pedestal)", step=1.0, decimals=1)
        self.contrast_button = QPushButton("Apply contrast")
        self.contrast_button.clicked.connect(self.apply_contrast)
        self.amplifier = LayerCombo(napari_viewer, Image, allow_none=ALL_AMPLIFIERS, accept=_is_frame)
        self.amplifier.setToolTip("show one frame alone, with the layers made from it")
        self.amplifier.currentTextChanged.connect(self.show_amplifier)
        self.calibration = PathEdit(mode="open", filter="Calibration (*.json)", tip="calibration.json from 'ccdseg calibrate'")
        self.calibration_button = QPushButton("Attach")
        self.calibration_button.clicked.connect(self.attach_calibration)
        self.prefer_button = QPushButton("Always open FITS with napari-ccdseg")
        self.prefer_button.setToolTip(
            "saves napari's reader preference for " + ", ".join(FITS_PATTERNS_PREFIX) + " files: no reader dialog, "
            "every amplifier read (napari's own reader takes only the first extension)"
        )
        self.prefer_button.clicked.connect(self.prefer_reader)
        self.status = wrapped_label("")

        form = QFormLayout()
        form.addRow(self.ds9)
        contrast_row = QHBoxLayout()
        contrast_row.addWidget(self.contrast, 1)
        contrast_row.addWidget(self.contrast_button)
        form.addRow("Contrast", contrast_row)
        form.addRow("Top (e⁻)", self.top_electrons)
        form.addRow("Show", self.amplifier)
        calibration_row = QHBoxLayout()
        calibration_row.addWidget(self.calibration, 1)
        calibration_row.addWidget(self.calibration_button)
        form.addRow("Calibration", calibration_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.prefer_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._hidden_by_us: list = []
        napari_viewer.layers.events.inserted.connect(self._layer_added)

    def apply_contrast(self) -> int:
        """Set the chosen contrast on every CCD frame; returns how many frames got it."""
        choice = CONTRASTS.index(self.contrast.currentText())
        done, missing = 0, []
        for layer in frame_layers(self.viewer):
            if choice == 0:
                layer.contrast_limits = noise_contrast(layer.data)
            elif choice == 2:
                layer.contrast_limits = display_range(layer.data)
            elif layer.metadata.get("calibration"):
                layer.contrast_limits = electron_contrast(layer.metadata["calibration"], self.top_electrons.value())
            else:
                missing.append(layer.name)
                continue
            done += 1
        self.status.setText(
            f"contrast set on {done} frame(s)"
            + (f"; no calibration on {', '.join(missing)}: attach one first" if missing else "")
        )
        return done

    def show_amplifier(self, name: str) -> None:
        """One frame and its derived layers alone, centred; ``all`` restores what was hidden here."""
        for layer in self._hidden_by_us:
            if layer in self.viewer.layers:
                layer.visible = True
        self._hidden_by_us = []
        chosen = self.amplifier.layer()
        if chosen is None:
            return
        keep = {id(chosen), *(id(layer) for layer in derived_from(self.viewer, chosen))}
        for layer in self.viewer.layers:
            if id(layer) not in keep and layer.visible:
                layer.visible = False
                self._hidden_by_us.append(layer)
        chosen.visible = True
        low, high = chosen.extent.world[:, -2:]
        camera(self.viewer).center = tuple((low + high) / 2)
        canvas = getattr(self.viewer, "_canvas_size", None)  # (height, width) once a canvas exists
        if canvas is not None and min(canvas) > 0:
            camera(self.viewer).zoom = 0.95 * float(min(np.asarray(canvas) / np.maximum(high - low, 1)))

    def _layer_added(self, event) -> None:
        """While one frame is shown alone, a new layer stays visible only if it is made from that frame."""
        chosen, layer = self.amplifier.layer(), event.value
        if chosen is None or layer is chosen or not layer.visible:
            return
        if not any(layer is derived for derived in derived_from(self.viewer, chosen)):
            layer.visible = False
            self._hidden_by_us.append(layer)

    def prefer_reader(self) -> None:
        patterns = prefer_for_fits()
        self.status.setText(f"{', '.join(patterns)} now open with napari-ccdseg (napari Preferences > Plugins to undo)")

    def attach_calibration(self) -> int:
        """Put each frame's calibration (matched by file, HDU and EXTNAME) into its metadata."""
        from ..calibrate import find_calibration, read_calibration

        try:
            path = self.calibration.text()
            if not path:
                raise InputError("choose a calibration file (calibration.json from 'ccdseg calibrate')")
            calibrations = read_calibration(path)
        except InputError as error:
            report_error(error, "attaching the calibration")
            return 0
        attached = 0
        for layer in frame_layers(self.viewer):
            source = layer.metadata.get("source")
            frame = Path(source).name if source else layer.name
            cal = find_calibration(
                calibrations, frame, int(layer.metadata.get("ccdseg_hdu", 0)), layer.metadata.get("ccdseg_extname")
            )
            if cal is not None and cal.row_pedestal_adu.size == layer.data.shape[0]:
                layer.metadata["calibration"] = cal.to_dict()
                attached += 1
        self.status.setText(f"calibration attached to {attached} frame(s)")
        return attached


def _is_frame(layer) -> bool:
    return not layer.rgb and layer.ndim == 2 and not layer.metadata.get("ccdseg_source")
