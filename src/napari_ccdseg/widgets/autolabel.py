"""Auto-label widget: threshold presets with a live, debounced preview, Apply, class statistics."""

from __future__ import annotations

import threading

import numpy as np
from napari.layers import Image
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ..autolabel import LABEL_PRESETS, PhysicalParams
from ..classes import BACKGROUND, CLASS_NAMES, UNLABELLED, class_stats
from ..errors import InputError
from ._common import LayerCombo, WorkerWidget, combo, dspin, form, report_error, spin, wrapped_label
from ._layers import image_layers, labels_layers, labels_name, set_labels, split_labels_name
from .workers import AutolabelSettings, LabelledUpdate, autolabel_worker

PREVIEW_LAYER = "auto-label preview"
DEBOUNCE_MS = 300

# PhysicalParams fields shown, with (label, low, high, step); the rest keep their defaults.
_SIGMA_FIELDS = {
    "seed_sigma": ("Cluster seed (σ)", 0.1, 100.0, 0.5),
    "grow_sigma": ("Cluster grow (σ)", 0.1, 100.0, 0.5),
    "hot_sigma": ("Hot pixel core (σ)", 0.1, 1000.0, 1.0),
    "hot_column_sigma": ("Hot column excess (σ)", 0.05, 100.0, 0.1),
    "glow_sigma": ("Glowing significance", 0.1, 1000.0, 0.5),
}


class AutolabelWidget(WorkerWidget):
    """Image layer + preset + thresholds; preview as you type; Apply writes ``<image> labels``."""

    def __init__(self, napari_viewer, parent=None) -> None:
        super().__init__(napari_viewer, parent)
        settings = self._settings_section()
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("add or update '<image> labels'")
        self.apply_button.clicked.connect(self.apply)
        self.apply_all_button = QPushButton("Apply to all images")
        self.apply_all_button.clicked.connect(self.apply_all)
        run = form([self.run_buttons(self.apply_button, self.apply_all_button), self.progress_bar, self.status])
        self.set_sections(settings, run, self._stats_section())
        self.busy_widgets = [settings, self.apply_button, self.apply_all_button]
        self._live_preview()
        self._preset_changed(self.preset.currentText())

    def _settings_section(self) -> QWidget:
        """Image, preset, thresholds, unmatched pixels, live preview."""
        defaults = PhysicalParams()
        self.image = LayerCombo(self.viewer, Image)
        self.preset = combo(LABEL_PRESETS, "physical",
                            "physical: thresholds in units of the frame's noise σ, or, on frames that "
                            "resolve single electrons, in electrons against the local dark current; "
                            "seed-v1: the original project's colour rules")
        self.sigmas = {
            name: dspin(getattr(defaults, name), low, high, step=step)
            for name, (_, low, high, step) in _SIGMA_FIELDS.items()
        }
        self.glow_scale = spin(defaults.glow_scale_px, 1, 4096, "scale of the large-scale level (px)", step=8)
        self.row_pedestal = QCheckBox("Subtract row medians (drifting baseline)")
        self.row_pedestal.setChecked(defaults.row_pedestal)
        self.unmatched_background = QCheckBox("Pixels no rule matches are background (else unlabelled)")
        self.live = QCheckBox("Live preview")
        self.live.setChecked(True)
        thresholds = [(label, self.sigmas[name]) for name, (label, *_rest) in _SIGMA_FIELDS.items()]
        self.physical_box = form(
            [*thresholds, ("Glow scale (px)", self.glow_scale), self.row_pedestal], "Physical thresholds"
        )
        return form(
            [("Image", self.image), ("Preset", self.preset), self.physical_box, self.unmatched_background, self.live]
        )

    def _stats_section(self) -> QWidget:
        """Class statistics of the shown labels and the class weights over every '… labels' layer."""
        self.table = QTableWidget(len(CLASS_NAMES) + 1, 3)
        self.table.setHorizontalHeaderLabels(["pixels", "%", "weight"])
        self.table.setVerticalHeaderLabels([*CLASS_NAMES, "unlabelled"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.table.setFixedHeight(
            self.table.horizontalHeader().sizeHint().height() + self.table.verticalHeader().length() + 4
        )
        self.dataset_line = wrapped_label("")
        title = wrapped_label("Class statistics of the shown labels, and the class weights they give:")
        return form([title, self.table, self.dataset_line])

    def _live_preview(self) -> None:
        """A preview once the user pauses (debounced) after any change of image or settings."""
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.preview)
        self.preview_worker = None
        self.preview_pending = False
        self.preview_stop = threading.Event()
        self.preview_count = 0
        self.image.currentTextChanged.connect(self.schedule_preview)
        self.preset.currentTextChanged.connect(self._preset_changed)
        for box in (*self.sigmas.values(), self.glow_scale):
            box.valueChanged.connect(self.schedule_preview)
        for check in (self.row_pedestal, self.unmatched_background):
            check.toggled.connect(self.schedule_preview)
        self.live.toggled.connect(self._live_toggled)

    # ------------------------------------------------------------ settings

    def _preset_changed(self, preset: str) -> None:
        self.physical_box.setEnabled(preset == "physical")
        self.unmatched_background.setEnabled(preset == "seed-v1")
        self.schedule_preview()

    def params(self) -> PhysicalParams:
        """The thresholds as the core's PhysicalParams (raises InputError on a bad combination)."""
        values = {name: box.value() for name, box in self.sigmas.items()}
        return PhysicalParams(**values, glow_scale_px=self.glow_scale.value(), row_pedestal=self.row_pedestal.isChecked())

    def settings(self, layers) -> AutolabelSettings:
        """Every field, read once, with the layers' images as the jobs (raises InputError on bad thresholds)."""
        unmatched = BACKGROUND if self.unmatched_background.isChecked() else UNLABELLED
        jobs = [(layer.name, np.asarray(layer.data)) for layer in layers]
        return AutolabelSettings(self.preset.currentText(), self.params(), unmatched, jobs)

    # ------------------------------------------------------------ preview

    def schedule_preview(self, *_) -> None:
        """Restart the debounce timer: the preview runs once the user pauses."""
        if self.live.isChecked():
            self.timer.start()

    def _live_toggled(self, on: bool) -> None:
        if on:
            self.schedule_preview()
        else:
            self.timer.stop()
            if PREVIEW_LAYER in self.viewer.layers:
                self.viewer.layers.remove(PREVIEW_LAYER)

    def preview(self) -> None:
        """Label the chosen image into the preview layer, in a worker (one at a time)."""
        layer = self.image.layer()
        if layer is None or not self.live.isChecked():
            return
        if self.preview_worker is not None:
            self.preview_pending = True
            self.preview_stop.set()
            return
        try:
            settings = self.settings([layer])
        except Exception as error:  # noqa: BLE001 - an InputError to show, no labels to compute
            self.status.setText(f"<span style='color:#e05050'>{error}</span>")
            return
        self.preview_stop = threading.Event()
        worker = autolabel_worker(settings, self.preview_stop)
        worker.errored.connect(lambda error: self.status.setText(f"<span style='color:#e05050'>{error}</span>"))
        try:
            worker.errored.disconnect(worker._relay_error)
        except (AttributeError, TypeError, RuntimeError):
            pass
        worker.yielded.connect(self._show_preview)
        worker.finished.connect(self._preview_finished)
        self.preview_worker = worker
        worker.start()

    def _show_preview(self, update: LabelledUpdate) -> None:
        if self.preview_pending or not self.live.isChecked():
            return  # stale: settings changed while it ran
        source = self.viewer.layers[update.name] if update.name in self.viewer.layers else None
        set_labels(self.viewer, PREVIEW_LAYER, update.labels, {"ccdseg_source": update.name}, like=source)
        self.preview_count += 1
        self.status.setText(f"preview of {update.name} ({self.preset.currentText()})")
        self.show_stats(update.labels)

    def _preview_finished(self) -> None:
        self.preview_worker = None
        if self.preview_pending:
            self.preview_pending = False
            self.preview()

    # ------------------------------------------------------------ apply

    def apply(self) -> None:
        """Label the chosen image and add or update ``<image> labels``."""
        layer = self.image.layer()
        if layer is None:
            report_error(InputError("choose an image layer to label"), "auto-labelling")
            return
        self._run([layer])

    def apply_all(self) -> None:
        """Label every image layer (each gets its own ``<image> labels``)."""
        self._run(image_layers(self.viewer))

    def _run(self, layers) -> None:
        if self.busy or not layers:
            return
        try:
            settings = self.settings(layers)
        except Exception as error:  # noqa: BLE001
            report_error(error, "auto-labelling")
            return
        recorded = settings.recorded()  # what the job was started with, whatever is edited while it runs
        worker = autolabel_worker(settings, self.stop_event)
        self.start_worker(worker, "auto-labelling", on_yield=lambda update: self._applied(update, recorded), total=len(layers))

    def _applied(self, update: LabelledUpdate, recorded: dict) -> None:
        meta = {"ccdseg_source": update.name, "ccdseg_reference": "auto-label", **recorded}
        source = self.viewer.layers[update.name] if update.name in self.viewer.layers else None
        set_labels(self.viewer, labels_name(update.name, "labels"), update.labels, meta, like=source)
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers.remove(PREVIEW_LAYER)
        self.progress_bar.setValue(self.progress_bar.value() + 1)
        self.status.setText(f"'{labels_name(update.name, 'labels')}' updated")
        self.show_stats(update.labels)

    # ------------------------------------------------------------ statistics

    def show_stats(self, labels: np.ndarray) -> None:
        """Fill the table for one label map; under it, the weights over every '… labels' layer."""
        stats = class_stats(labels)
        weights = stats.weights()
        for row in range(len(CLASS_NAMES)):
            values = [f"{stats.counts[row]:,}", f"{stats.percentages[row]:.3f}", "-" if weights is None else f"{weights[row]:.3f}"]
            for column, text in enumerate(values):
                self.table.setItem(row, column, QTableWidgetItem(text))
        self.table.setItem(len(CLASS_NAMES), 0, QTableWidgetItem(f"{stats.unlabelled:,}"))
        for column in (1, 2):
            self.table.setItem(len(CLASS_NAMES), column, QTableWidgetItem("-"))
        maps = [layer.data for layer in labels_layers(self.viewer) if (split_labels_name(layer.name) or ("", ""))[1] == "labels"]
        if maps:
            all_weights = class_stats(maps).weights()
            text = "-" if all_weights is None else ", ".join(f"{w:.3f}" for w in all_weights)
            self.dataset_line.setText(f"Class weights over all {len(maps)} '… labels' layer(s): [{text}]")

    def closeEvent(self, event) -> None:  # noqa: N802
        self.timer.stop()
        self.preview_stop.set()
        super().closeEvent(event)
