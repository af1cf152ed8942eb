"""Masks widget: the analysis mask of an image and its class map, and the single-electron rate, in the viewer.

Run does what ``ccdseg mask`` does, in a worker: calibrate the image (class map's cluster and hot
pixels left out; a given gain when the peaks are not resolved) unless the image layer already
carries a calibration (the Clusters widget's, or one the View widget attached), which is reused
when no gain is typed in; build the mask bitfield
(:func:`napari_ccdseg.masks.build_mask`) and fit λ in the unmasked pixels
(:func:`napari_ccdseg.masks.rates`). The class map is read when Run is pressed, so hand corrections
change the mask.

Results: a Labels layer ``<image> mask`` showing, per pixel, the first of the checked bits it
carries (in the order of ``masks.BITS``) in that bit's colour — a bitfield has combinations, and one
colour per shown bit keeps the picture legible; unchecking a bit shows what lies under it. The
status bar names the bit under the cursor; the full bitfield is in the layer's
``metadata["ccdseg_mask_bits"]``. The rate table (unmasked pixels, pixels with 1–4 e⁻, λ ± error,
σ, misassigned share, λ per day) and the histogram of the unmasked pixels' charge with the fitted
comb fill the lower half; Save writes ``<image>_mask.tif``, rates.csv and rates.md.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..calibrate import Calibration
from ..catalogue import CALIBRATION_EXCLUDED
from ..errors import InputError
from ..masks import BITS, COUNTED_PEAKS, MaskParams, Rates, bit_counts
from ..updates import LogUpdate, StepUpdate
from ._common import (
    PLOT_INK,
    LayerCombo,
    PathEdit,
    WorkerWidget,
    clear_dark_axes,
    dark_figure,
    dark_legend,
    dspin,
    report_error,
    spin,
    wrapped_label,
)
from ._layers import frame_layers, frame_shape, full_name, labels_name, own_class_map, place_like

BIT_COLOURS: dict[str, str] = {
    "cluster": "#ff3333",
    "halo": "#ff9933",
    "bleed": "#ffe033",
    "hot_pixel": "#3380ff",
    "hot_column": "#33e0ff",
    "glowing": "#59ff40",
    "serial_row": "#e033ff",
    "edge": "#9a9a9a",
    "saturated": "#ffffff",
}
"""One colour per bit; cluster, hot pixel and glowing in their class colours' hues."""

MASK_STEPS = 3
"""calibrate, mask, fit: the worker's progress steps."""


def shown_bits(mask: np.ndarray, names: set[str] | frozenset[str]) -> np.ndarray:
    """uint8 map: 1 + the index in BITS of the first bit in ``names`` a pixel carries, 0 for none."""
    shown = np.zeros(np.shape(mask), dtype=np.uint8)
    for index in reversed(range(len(BITS))):  # earlier bits overwrite later ones
        bit = BITS[index]
        if bit.name in names:
            shown[(np.asarray(mask) & bit.value) > 0] = index + 1
    return shown


def mask_layer_kwargs(name: str) -> dict:
    """A Labels layer in the bit colours, background transparent, the status bar naming the bit."""
    from napari.utils.colormaps import DirectLabelColormap

    colours: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for index, bit in enumerate(BITS, start=1):
        colours[index] = QColor(BIT_COLOURS[bit.name]).getRgbF()
    return {
        "name": name,
        "colormap": DirectLabelColormap(color_dict=colours),
        "opacity": 0.6,
        "features": {"index": list(range(len(BITS) + 1)), "mask bit": ["unmasked", *(b.name for b in BITS)]},
    }


@dataclass(frozen=True)
class MaskSettings:
    """The form's settings, read in one place."""

    params: MaskParams
    gain: float | None
    exposure_s: float | None
    readout_s: float | None


@dataclass(frozen=True)
class MaskJob:
    name: str
    image: np.ndarray
    labels: np.ndarray
    frame: str
    header: dict
    region: tuple | None
    calibration: Calibration | None = None
    """The image layer's calibration (Clusters widget, View widget), reused instead of a new fit."""


@dataclass(frozen=True)
class MaskedUpdate:
    """The mask of one image, its rate measurement and calibration."""

    name: str
    mask: np.ndarray
    rates: Rates
    calibration: Calibration


@thread_worker(ignore_errors=True)  # errors go to the widget (a notification), not re-raised
def mask_worker(job: MaskJob, settings: MaskSettings, stop: threading.Event) -> Iterator:
    """Calibrate, mask and fit one frame, as ``ccdseg mask`` does; yields progress and one MaskedUpdate."""
    from ..calibrate import calibrate_frame
    from ..masks import build_mask, rates

    yield StepUpdate(1, 1, 0, MASK_STEPS)
    if job.calibration is not None and settings.gain is None:
        calibration = job.calibration
        yield LogUpdate(f"{job.name}: using the image's calibration ({calibration.method})")
    else:
        yield LogUpdate(f"{job.name}: calibrating …")
        calibration = calibrate_frame(
            job.image, frame=job.frame, header=job.header, exclude=np.isin(job.labels, CALIBRATION_EXCLUDED),
            gain=settings.gain,
        )
    if stop.is_set():
        yield LogUpdate("stopped: no mask")
        return
    yield StepUpdate(1, 1, 1, MASK_STEPS)
    yield LogUpdate(f"{job.name}: masking …")
    mask = build_mask(job.image, job.labels, calibration, params=settings.params, region=job.region,
                      header=job.header, frame=job.name)
    if stop.is_set():
        yield LogUpdate("stopped: no mask")
        return
    yield StepUpdate(1, 1, 2, MASK_STEPS)
    yield LogUpdate(f"{job.name}: fitting the unmasked pixels …")
    result = rates(calibration.electrons(job.image), mask, calibration,
                   exposure_s=settings.exposure_s, readout_s=settings.readout_s)
    yield StepUpdate(1, 1, MASK_STEPS, MASK_STEPS)
    yield MaskedUpdate(job.name, mask, result, calibration)


def rate_rows(r: Rates) -> list[tuple[str, str]]:
    """(quantity, value with unit and error) lines of the rate table."""
    def pm(value: float | None, err: float | None, unit: str) -> str:
        if value is None or not math.isfinite(value):
            return "–"
        return f"{value:.4g} ± {err:.2g} {unit}"

    rows = [("unmasked pixels", str(r.unmasked_pixels))]
    rows += [(f"pixels with {k} e⁻", str(r.pixels_by_charge[k])) for k in range(1, COUNTED_PEAKS + 1)]
    rows += [
        ("λ (single-electron rate)", pm(r.ser_e_per_px, r.ser_err, "e⁻/pixel")),
        ("σ (fitted read noise)", f"{r.noise_e:.3f} e⁻"),
        ("0→1 e⁻ misassigned, Φ(−0.5/σ)", f"{r.misassigned_fraction:.2g}"),
        ("λ per day", pm(r.ser_e_per_px_day, r.ser_day_err, "e⁻/pixel/day")),
    ]
    return rows


class CombPlot:
    """Histogram of the unmasked pixels' charge (log counts) with the fitted comb, on napari's background."""

    def __init__(self) -> None:
        self.figure, self.canvas, self.axes = dark_figure()
        self.draw(None)

    def draw(self, result: Rates | None) -> None:
        axes = self.axes
        clear_dark_axes(axes, "unmasked pixel charge (e⁻)", "pixels per bin")
        fit = result.fit if result is not None else None
        if fit is None:
            axes.set_title("no fit (run first, or peaks not resolved)", fontsize=8, color=PLOT_INK)
        else:
            centres = 0.5 * (fit.edges[1:] + fit.edges[:-1])
            axes.stairs(fit.counts, fit.edges, color=PLOT_INK, label="unmasked pixels")
            axes.plot(centres, fit.expected(), color="#ff5555", lw=1, label="fitted comb")
            axes.set_yscale("log")
            axes.set_ylim(bottom=0.5)
            axes.set_title(f"λ = {fit.values['lam']:.3g} ± {fit.errors['lam']:.2g} e⁻/pixel, "
                           f"σ = {fit.values['sigma']:.3f} e⁻", fontsize=8, color=PLOT_INK)
            dark_legend(axes)
        self.canvas.draw_idle()


class MasksWidget(WorkerWidget):
    """Image + class map -> mask bitfield (a Labels layer with per-bit toggles), rate table and comb fit."""

    def __init__(self, napari_viewer, parent=None) -> None:
        super().__init__(napari_viewer, parent)
        defaults = MaskParams()
        self.image = LayerCombo(napari_viewer, Image, accept=lambda layer: any(layer is f for f in frame_layers(napari_viewer)))
        self.image.setToolTip("the frame to mask (ADU of an electron-resolving amplifier)")
        self.class_map = LayerCombo(napari_viewer, Labels, accept=lambda layer: not layer.name.endswith(" mask"))
        self.class_map.setToolTip("its class map: clusters, hot pixels and glowing are masked")
        self.halo = dspin(defaults.halo_px, 0.0, 100.0, "halo radius of clusters up to 10 e⁻ (px); +3 px per decade")
        self.bleed = spin(defaults.bleed_px, 0, 1000, "pixels masked after bright clusters along their rows")
        self.edge = spin(defaults.edge_px, 0, 1000, "pixels masked inside the active area's border")
        self.gain = dspin(0.0, 0.0, 1e5, step=0.1, decimals=3,
                          tip="ADU per electron, used when the frame's electron peaks are not resolved")
        self.gain.setSpecialValueText("auto")
        self.exposure = dspin(0.0, 0.0, 1e7, "exposure time (s) for λ per day; auto: header EXPTIME", step=60, decimals=1)
        self.exposure.setSpecialValueText("auto")
        self.readout = dspin(0.0, 0.0, 1e7, "readout time of the image (s); auto: header READTIME", step=60, decimals=1)
        self.readout.setSpecialValueText("auto")
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("calibrate, mask and measure the single-electron rate (reads the class map now)")
        self.run_button.clicked.connect(self.run)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.request_stop)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, MASK_STEPS)
        self.status = wrapped_label("")

        self.bit_boxes: dict[str, QCheckBox] = {}
        bits_box = QGroupBox("Show bits")
        grid = QGridLayout(bits_box)
        for index, bit in enumerate(BITS):
            box = QCheckBox(bit.name)
            pixmap = QPixmap(12, 12)
            pixmap.fill(QColor(BIT_COLOURS[bit.name]))
            box.setIcon(QIcon(pixmap))
            box.setToolTip(bit.rule)
            box.setChecked(True)
            box.toggled.connect(self.refresh_layer)
            grid.addWidget(box, index // 3, index % 3)
            self.bit_boxes[bit.name] = box
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["quantity", "value"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMinimumHeight(200)
        self.plot = CombPlot()
        self.save_folder = PathEdit(mode="folder", tip="folder for <image>_mask.tif, rates.csv and rates.md")
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self.save)

        form = QFormLayout()
        form.addRow("Image", self.image)
        form.addRow("Class map", self.class_map)
        form.addRow("Halo (px)", self.halo)
        form.addRow("Bleed (px)", self.bleed)
        form.addRow("Edge (px)", self.edge)
        form.addRow("Gain (ADU/e⁻)", self.gain)
        form.addRow("Exposure (s)", self.exposure)
        form.addRow("Readout (s)", self.readout)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        save = QHBoxLayout()
        save.addWidget(self.save_folder)
        save.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(bits_box)
        layout.addWidget(self.table)
        layout.addWidget(self.plot.canvas, 1)
        layout.addLayout(save)

        self.busy_widgets = [self.run_button, self.image, self.class_map, self.halo, self.bleed, self.edge,
                             self.gain, self.exposure, self.readout]
        self.shown: MaskedUpdate | None = None
        self.params = MaskParams()
        """The settings of the shown mask (rates.md records them)."""
        self.image.currentTextChanged.connect(self._image_chosen)
        self._image_chosen(self.image.currentText())

    # ------------------------------------------------------------ inputs

    def _image_chosen(self, _name: str) -> None:
        """Propose the image's own class map (prediction, labels or truth)."""
        layer = self.image.layer()
        own = own_class_map(self.viewer, layer) if layer is not None else None
        if own is not None:
            self.class_map.setCurrentText(own)

    def settings(self) -> MaskSettings:
        params = MaskParams(halo_px=self.halo.value(), bleed_px=self.bleed.value(), edge_px=self.edge.value())
        return MaskSettings(
            params=params,
            gain=self.gain.value() or None,
            exposure_s=self.exposure.value() or None,
            readout_s=self.readout.value() or None,
        )

    def job(self) -> MaskJob:
        """The chosen image and class map, copied (painting while the worker runs cannot race it)."""
        from ..masks import active_region

        image, labels = self.image.layer(), self.class_map.layer()
        if image is None:
            raise InputError("choose an image layer to mask")
        if labels is None:
            raise InputError(f"'{image.name}': choose its class map (a Labels layer)")
        if tuple(labels.data.shape) != frame_shape(image):
            raise InputError(f"'{labels.name}' is {labels.data.shape[0]}×{labels.data.shape[1]}, image "
                             f"'{image.name}' is {frame_shape(image)[0]}×{frame_shape(image)[1]}: choose its class map")
        header = image.metadata.get("header") or {}
        data = np.asarray(image.data, dtype=np.float32)
        region = active_region(data.shape, header, image.metadata.get("simulation"))
        stored = image.metadata.get("calibration")
        calibration = Calibration.from_dict(stored) if stored else None
        return MaskJob(image.name, data, np.array(labels.data, dtype=np.uint8), full_name(image), header, region, calibration)

    # ------------------------------------------------------------ run

    def run(self) -> None:
        if self.busy:
            return
        try:
            job = self.job()
            settings = self.settings()
            if settings.exposure_s is None or settings.readout_s is None:
                from ..masks import header_times

                exposure, readout = header_times(job.header)
                settings = MaskSettings(settings.params, settings.gain,
                                        settings.exposure_s or exposure, settings.readout_s or readout)
        except InputError as error:
            report_error(error, "masking")
            return
        self.progress_bar.setValue(0)
        self.status.setText(f"masking {job.name} …")
        self.params = settings.params
        self.start_worker(mask_worker(job, settings, self.stop_event), "masking", on_yield=self._update, total=MASK_STEPS)

    def _update(self, update) -> None:
        if isinstance(update, LogUpdate):
            self.status.setText(update.message)
        elif isinstance(update, StepUpdate):
            self.progress_bar.setValue(update.step)
        elif isinstance(update, MaskedUpdate):
            self.show_result(update)

    # ------------------------------------------------------------ results

    def mask_name(self, name: str) -> str:
        return labels_name(name, "mask")

    def checked_bits(self) -> frozenset[str]:
        return frozenset(name for name, box in self.bit_boxes.items() if box.isChecked())

    def show_result(self, update: MaskedUpdate) -> None:
        """The mask layer, the per-bit pixel counts on the toggles, the rate table and the comb plot."""
        self.shown = update
        counts = bit_counts(update.mask)
        for name, box in self.bit_boxes.items():
            box.setText(f"{name}  {counts[name]}")
        self.refresh_layer()
        rows = rate_rows(update.rates)
        self.table.setRowCount(len(rows))
        for row, (quantity, value) in enumerate(rows):
            self.table.setItem(row, 0, QTableWidgetItem(quantity))
            item = QTableWidgetItem(value)
            item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
            self.table.setItem(row, 1, item)
        self.table.resizeColumnToContents(0)
        self.plot.draw(update.rates)
        r = update.rates
        self.status.setText(f"{update.name}: {r.unmasked_pixels} unmasked pixels ({counts['unmasked'] / update.mask.size:.0%}); "
                            + (f"λ = {r.ser_e_per_px:.4g} ± {r.ser_err:.2g} e⁻/pixel" if math.isfinite(r.ser_e_per_px)
                               else "no λ: electron peaks not resolved"))

    def refresh_layer(self, *_) -> None:
        """Show the checked bits of the shown mask (add or update ``<image> mask`` in place)."""
        update = self.shown
        if update is None:
            return
        data = shown_bits(update.mask, self.checked_bits())
        name = self.mask_name(update.name)
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if isinstance(layer, Labels) and layer.data.shape == data.shape:
            layer.data = data
        else:
            if layer is not None:
                self.viewer.layers.remove(layer)
            layer = self.viewer.add_labels(data, **mask_layer_kwargs(name))
            image = self.viewer.layers[update.name] if update.name in self.viewer.layers else None
            if image is not None:
                place_like(layer, image)
        layer.metadata["ccdseg_mask_bits"] = update.mask
        layer.metadata["ccdseg_source"] = update.name

    def save(self, *_) -> list[Path]:
        """<image>_mask.tif, rates.csv and rates.md of the shown result, atomically."""
        from ..io import safe_stem
        from ..masks_report import write_mask, write_rates_folder

        if self.shown is None:
            report_error(InputError("run first: there is no mask to save"), "saving")
            return []
        folder = self.save_folder.folder_or_ask("Save the mask and rates to")
        if not folder:
            return []
        update = self.shown
        try:
            written = [write_mask(Path(folder) / f"{safe_stem(update.name)}_mask.tif", update.mask),
                       *write_rates_folder(folder, [update.rates], [bit_counts(update.mask)],
                                           source=f"class map layer '{self.class_map.currentText()}'",
                                           params=self.params)]
        except Exception as error:  # noqa: BLE001 - an InputError or OSError, shown to the user
            report_error(error, "saving")
            return []
        self.status.setText("written: " + ", ".join(str(p) for p in written))
        return written
