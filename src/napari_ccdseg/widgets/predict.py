"""Predict & correct widget: a model file on image layers, the report against a truth, corrections.

An empty Model field means the bundled default model, so a fresh install predicts at once.

Predictions are ordinary Labels layers ``<image> prediction`` in the class colours: paint, fill and
erase them with napari's tools, then "Add to training set" (writes ``X.npy`` + ``X_labels.png``
into the training folder, the same layout the CLI trains on), "Save labels…" (the plugin's
writer) or "Fine-tune on corrections" in the Train widget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtGui import QFont
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

from ..bundled import DEFAULT_MODEL, bundled_models, resolve_model
from ..classes import CLASS_COLOURS, CLASS_NAMES, CLUSTER, GLOWING, HOT_PIXEL, UNLABELLED
from ..devices import available_devices
from ..errors import InputError
from ..io import safe_stem
from ..report_text import frame_block
from ..updates import LogUpdate, StepUpdate
from ._common import (
    LayerCombo, PathEdit, WorkerWidget, combo, form, report_error, row, session, user_folder, wrapped_label,
)
from ._layers import (
    add_frame,
    full_name,
    image_layers,
    is_simulation_truth,
    labels_name,
    paired_labels,
    set_labels,
    split_labels_name,
    watch_layers,
)
from .workers import PredictedUpdate, PredictJob, PredictSettings, predict_worker

COMPARE_CHOICES = {"simulation truth": ("truth", "labels"), "reference: X labels": ("labels",), "nothing": ()}
"""'Compare with' choices: the paired layer kinds tried in order. Only a simulation's truth is exact
(``X truth``, or ``X labels`` the reader found the simulator's record for); other ``X labels`` (auto
or hand labels) are a reference, and the report says so."""
SIMULATION_ONLY = "simulation truth"
IMPLAUSIBLE_SHARE = {GLOWING: 0.20, HOT_PIXEL: 0.05, CLUSTER: 0.20}
"""Fraction of a frame above which a class is suspicious (a mislabelled or uncalibrated frame)."""


def implausible_shares(labels: np.ndarray) -> list[str]:
    """Warnings for classes covering an implausible share of a class map, e.g. ``glowing covers 34 %``."""
    labelled = labels[labels != UNLABELLED]
    if labelled.size == 0:
        return []
    return [
        f"{CLASS_NAMES[cls]} covers {share:.0%} of the frame (over {limit:.0%} is implausible)"
        for cls, limit in IMPLAUSIBLE_SHARE.items()
        if (share := float(np.count_nonzero(labelled == cls)) / labelled.size) > limit
    ]


class PredictWidget(WorkerWidget):
    """Model file + image layers -> ``<image> prediction`` layers, report, and the correction tools."""

    def __init__(self, napari_viewer, parent=None) -> None:
        super().__init__(napari_viewer, parent)
        self.session = session(napari_viewer)
        self._checked: dict[str, bool] = {}
        self._compared: dict[str, tuple[str, bool]] = {}  # image -> (layer compared with, is it exact truth)
        self._warnings: list[str] = []
        self._done_count = self._job_count = 0
        self._auto_model = self.session.model_path
        inputs = self._inputs_section()
        self.set_sections(inputs, self._report_section(), self._correct_section())
        self.busy_widgets = [inputs, self.predict_button]
        self.refresh_images()
        watch_layers(napari_viewer, self.refresh_images)

    def _inputs_section(self) -> QWidget:
        """Model file, device, image layers, what to compare with, probability layers."""
        self.model = PathEdit(
            self.session.model_path, mode="open", filter="Model (*.safetensors)",
            tip="model file; left empty, the bundled default model",
        )
        self.model.edit.setPlaceholderText(
            "bundled default model" if DEFAULT_MODEL in bundled_models() else "no bundled model: choose a file or train one"
        )
        self.last_button = QPushButton("Use last trained")
        self.last_button.clicked.connect(lambda: self.model.setText(self.session.model_path))
        self.session.model_changed.connect(self._model_trained)
        devices = available_devices()
        self.device = combo(devices, devices[1] if len(devices) > 1 else "cpu")
        self.images = QListWidget()
        self.images.setMaximumHeight(110)
        self.images.setToolTip("image layers to predict")
        self.compare = combo(
            list(COMPARE_CHOICES),
            SIMULATION_ONLY,
            "simulation truth: '<image> truth', or a simulated file's labels (exact); reference: '<image> labels' "
            "(auto or hand labels: agreement with a reference, not accuracy)",
        )
        self.probabilities = QCheckBox("Add per-class probability layers")
        return form([("Model", row(self.model, self.last_button)), ("Device", self.device), ("Images", self.images),
                     ("Compare with", self.compare), self.probabilities])

    def _report_section(self) -> QWidget:
        """Predict, Stop, progress, status and the report."""
        self.predict_button = QPushButton("Predict")
        self.predict_button.clicked.connect(self.predict)
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        self.report.setLineWrapMode(QPlainTextEdit.NoWrap)
        font = QFont("Monospace")
        font.setStyleHint(QFont.TypeWriter)
        font.setPointSize(8)
        self.report.setFont(font)
        self.report.setMinimumHeight(270)
        return form([self.run_buttons(self.predict_button), self.progress_bar, self.status, self.report])

    def _correct_section(self) -> QGroupBox:
        """A labels layer to add to the training folder or save (usable while a prediction runs)."""
        self.correct_layer = LayerCombo(self.viewer, Labels)
        self.training_folder = PathEdit(
            self.session.training_folder or str(user_folder("training-set")),
            mode="folder",
            tip="corrected frames are written here as X.npy + X_labels.png (a CLI training folder)",
        )
        self.add_button = QPushButton("Add to training set")
        self.add_button.setToolTip("write the image and these labels into the training folder")
        self.add_button.clicked.connect(self.add_to_training_set)
        self.save_button = QPushButton("Save labels…")
        self.save_button.setToolTip("save the labels layer as a class map (PNG, TIFF or NPY)")
        self.save_button.clicked.connect(self.save_labels_dialog)
        self.correct_status = wrapped_label(
            "Correct a prediction with napari's label tools (paint, fill, erase; label 1 glowing, "
            "2 hot pixel, 3 cluster, 0 background). Then add it to the training set, save it, or press "
            "'Fine-tune on corrections' in the Train widget."
        )
        return form(
            [("Labels", self.correct_layer), ("Training folder", self.training_folder),
             row(self.add_button, self.save_button), self.correct_status],
            "Correct and retrain",
        )

    # ------------------------------------------------------------ inputs

    def _model_trained(self, path: str) -> None:
        """A model was just trained: use it, unless the user chose another file meanwhile."""
        if self.model.text() in ("", self._auto_model):
            self.model.setText(path)
        self._auto_model = path

    def refresh_images(self, *_) -> None:
        """Image layers as a checkable list; check states survive refreshes, new images start checked."""
        for index in range(self.images.count()):
            item = self.images.item(index)
            self._checked[item.text()] = item.checkState() == Qt.Checked
        self.images.clear()
        for layer in image_layers(self.viewer):
            item = QListWidgetItem(layer.name)
            source = layer.metadata.get("source")
            item.setToolTip(full_name(layer) + (f"\n{source}" if source else ""))
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if self._checked.get(layer.name, True) else Qt.Unchecked)
            self.images.addItem(item)

    def checked_images(self) -> list[str]:
        return [
            self.images.item(i).text()
            for i in range(self.images.count())
            if self.images.item(i).checkState() == Qt.Checked
        ]

    def truth_for(self, image: Image) -> Labels | None:
        """The layer to compare a prediction of ``image`` with, per the "Compare with" choice."""
        found = paired_labels(self.viewer, image)
        choice = self.compare.currentText()
        layers = [found[kind] for kind in COMPARE_CHOICES[choice] if kind in found]
        if choice == SIMULATION_ONLY:
            layers = [layer for layer in layers if is_simulation_truth(layer)]
        return layers[0] if layers else None

    # ------------------------------------------------------------ predict

    def settings(self) -> PredictSettings:
        """Every field, read once, as the run's PredictSettings (raises InputError on a bad choice)."""
        model = str(resolve_model(self.model.text()))  # empty: the bundled default, as the CLI reads names
        images = [self.viewer.layers[n] for n in self.checked_images() if n in self.viewer.layers]
        if not images:
            raise InputError("check at least one image layer to predict")
        jobs = []
        for image in images:
            truth, calibration = self.truth_for(image), image.metadata.get("calibration")
            if truth is None:
                jobs.append(PredictJob(image.name, np.asarray(image.data), calibration=calibration))
                continue
            instances = truth.metadata.get("ccdseg_instances")
            exact = is_simulation_truth(truth)
            jobs.append(PredictJob(image.name, np.asarray(image.data), np.array(truth.data), instances, truth.name, exact,
                                   calibration))
        return PredictSettings(model, self.device.currentText(), jobs, self.probabilities.isChecked())

    def predict(self) -> None:
        """Predict the checked images in a worker; each prediction appears when its frame is done."""
        if self.busy:
            return
        try:
            settings = self.settings()
        except InputError as error:
            report_error(error, "prediction")
            return
        self._compared = {job.name: (job.truth_name, job.exact) for job in settings.jobs if job.truth_name}
        self.report.clear()
        self._warnings = []
        self.status.setText(f"predicting {len(settings.jobs)} frame(s) …")
        self._done_count, self._job_count = 0, len(settings.jobs)
        worker = predict_worker(settings, self.stop_event)
        self.start_worker(worker, "prediction", on_yield=self._update, on_done=self._finished, total=len(settings.jobs))

    def _finished(self) -> None:
        """Say how the run ended (after an error WorkerWidget has already said so).

        Also called by the last frame's handler when it ran after the worker finished (adding a
        layer processes queued events, so 'finished' can overtake a frame's update).
        """
        if self.failed:
            return
        if self.stop_event.is_set():
            self.status.setText(f"stopped: {self._done_count} of {self._job_count} frame(s) predicted")
        elif self._warnings:
            self.status.setText(f"{self._done_count} frame(s) predicted; check: " + "; ".join(self._warnings))
        else:
            self.status.setText(f"{self._done_count} frame(s) predicted")

    def _update(self, update) -> None:
        if isinstance(update, LogUpdate):
            self.status.setText(update.message)
        elif isinstance(update, StepUpdate):
            self.progress_bar.setRange(0, update.epochs * update.steps)
            self.progress_bar.setValue((update.epoch - 1) * update.steps + update.step)
        elif isinstance(update, PredictedUpdate):
            self._add_prediction(update)

    def _add_prediction(self, update: PredictedUpdate) -> None:
        source = self.viewer.layers[update.name] if update.name in self.viewer.layers else None
        meta = {"ccdseg_model": update.model_path, "ccdseg_source": update.name}
        layer = set_labels(self.viewer, labels_name(update.name, "prediction"), update.labels, meta, like=source)
        if update.probabilities is not None:
            for index, class_name in enumerate(CLASS_NAMES):
                name = f"{update.name} probability {class_name}"
                prob = add_frame(
                    self.viewer, name, update.probabilities[index], {"ccdseg_source": update.name}, like=source
                )
                prob.contrast_limits = (0.0, 1.0)
                prob.colormap = _class_colormap(index)
                prob.blending = "additive"
                prob.visible = class_name == "cluster"
        warnings = [f"{layer.name}: {w}" for w in implausible_shares(update.labels)]
        if update.evaluation is not None:
            reference, exact = self._compared.get(update.name, ("", True))
            if reference and not exact:
                self.report.appendPlainText(
                    f"compared with the REFERENCE '{reference}' (auto or hand labels, not truth):\n"
                    "the figures below measure agreement with it, not accuracy"
                )
                if reference in self.viewer.layers:
                    shares = implausible_shares(np.asarray(self.viewer.layers[reference].data))
                    warnings += [f"{reference}: {w}" for w in shares]
            elif reference:
                self.report.appendPlainText(f"compared with the simulation truth '{reference}'")
            self.report.appendPlainText(frame_block(update.name, update.evaluation))
            self.report.verticalScrollBar().setValue(0)  # the first frame's table stays in view
        for warning in warnings:
            self.report.appendPlainText(f"warning: {warning}")
        self._warnings += warnings
        self._done_count += 1
        self.status.setText(f"'{layer.name}' added")
        if self.worker is None:
            self._finished()
        self.correct_layer.refresh()
        self.correct_layer.setCurrentText(layer.name)

    # ------------------------------------------------------------ corrections

    def _chosen_labels(self) -> tuple[Labels, Image | None]:
        layer = self.correct_layer.layer()
        if layer is None:
            raise InputError("choose a labels layer (e.g. '<image> prediction') first")
        parsed = split_labels_name(layer.name)
        source = layer.metadata.get("ccdseg_source") or (parsed[0] if parsed else None)
        image = self.viewer.layers[source] if source and source in self.viewer.layers else None
        return layer, image if isinstance(image, Image) else None

    def add_to_training_set(self) -> Path | None:
        """Write the image as ``X.npy`` and the labels as ``X_labels.png`` into the training folder."""
        from .. import io

        try:
            layer, image = self._chosen_labels()
            if image is None:
                raise InputError(f"'{layer.name}': no image layer of the same name to pair it with")
            folder = Path(self.training_folder.text() or user_folder("training-set"))
            folder.mkdir(parents=True, exist_ok=True)
            stem = safe_stem(full_name(image))
            io.write_label_map(folder / f"{stem}_labels.png", np.asarray(layer.data))
            io.write_frame(folder / f"{stem}.npy", np.asarray(image.data))
        except Exception as error:  # noqa: BLE001 - InputError or OSError, shown to the user
            report_error(error, "adding to the training set")
            return None
        self.session.set_training_folder(str(folder))
        count = len(io.find_dataset(folder))
        self.correct_status.setText(f"'{image.name}' added to {folder} ({count} frame(s) there)")
        return folder / f"{stem}.npy"

    def save_labels_dialog(self) -> None:
        """Ask where, then save the labels layer through the plugin's writer."""
        try:
            layer, image = self._chosen_labels()
        except InputError as error:
            report_error(error, "saving labels")
            return
        stem = safe_stem(full_name(image) if image is not None else layer.name)
        start = str(Path(self.training_folder.text() or Path.home()) / f"{stem}_labels.png")
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", start, "Label maps (*.png *.tif *.npy)")
        if path:
            self.save_labels(path)

    def save_labels(self, path: str | Path) -> list[str]:
        """Save the chosen labels layer to ``path`` with the napari-ccdseg writer."""
        import napari

        try:
            layer, _ = self._chosen_labels()
            written = napari.save_layers(str(path), [layer], plugin="napari-ccdseg")
        except Exception as error:  # noqa: BLE001
            report_error(error, "saving labels")
            return []
        self.correct_status.setText(f"saved {', '.join(written)}")
        return written


def _class_colormap(index: int):
    """A black-to-class-colour colormap for a probability layer."""
    from napari.utils.colormaps import Colormap

    rgb = CLASS_COLOURS[index] if index else (1.0, 1.0, 1.0)
    return Colormap([[0, 0, 0, 1], [*rgb, 1]], name=f"ccdseg {CLASS_NAMES[index]}")
