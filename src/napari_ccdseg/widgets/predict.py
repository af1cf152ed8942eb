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
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from ..bundled import DEFAULT_MODEL, bundled_models, resolve_model
from ..classes import CLASS_COLOURS, CLASS_NAMES, CLUSTER, GLOWING, HOT_PIXEL, UNLABELLED
from ..devices import available_devices
from ..errors import InputError
from ..io import safe_stem
from ..report_text import frame_block
from ..updates import LogUpdate, StepUpdate
from ._common import LayerCombo, PathEdit, WorkerWidget, combo, report_error, session, user_folder, wrapped_label
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
from .workers import PredictedUpdate, PredictJob, predict_worker

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
        self.model = PathEdit(
            self.session.model_path,
            mode="open",
            filter="Model (*.safetensors)",
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
        self.probabilities = QCheckBox("Add per-class probability layers")
        self.compare = combo(
            list(COMPARE_CHOICES),
            SIMULATION_ONLY,
            "simulation truth: '<image> truth', or a simulated file's labels (exact); reference: '<image> labels' "
            "(auto or hand labels: agreement with a reference, not accuracy)",
        )
        self.predict_button = QPushButton("Predict")
        self.predict_button.clicked.connect(self.predict)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.request_stop)
        self.progress_bar = QProgressBar()
        self.status = wrapped_label("")
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        self.report.setLineWrapMode(QPlainTextEdit.NoWrap)
        font = QFont("Monospace")
        font.setStyleHint(QFont.TypeWriter)
        font.setPointSize(8)
        self.report.setFont(font)
        self.report.setMinimumHeight(270)

        # corrections
        self.correct_layer = LayerCombo(napari_viewer, Labels)
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

        form = QFormLayout()
        model_row = QHBoxLayout()
        model_row.addWidget(self.model)
        model_row.addWidget(self.last_button)
        form.addRow("Model", model_row)
        form.addRow("Device", self.device)
        form.addRow("Images", self.images)
        form.addRow("Compare with", self.compare)
        buttons = QHBoxLayout()
        buttons.addWidget(self.predict_button)
        buttons.addWidget(self.stop_button)
        correct_box = QGroupBox("Correct and retrain")
        correct = QVBoxLayout(correct_box)
        correct_form = QFormLayout()
        correct_form.addRow("Labels", self.correct_layer)
        correct_form.addRow("Training folder", self.training_folder)
        correct.addLayout(correct_form)
        correct_buttons = QHBoxLayout()
        correct_buttons.addWidget(self.add_button)
        correct_buttons.addWidget(self.save_button)
        correct.addLayout(correct_buttons)
        correct.addWidget(self.correct_status)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.probabilities)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.report)
        layout.addWidget(correct_box)
        layout.addStretch(1)

        self.busy_widgets = [self.predict_button, self.model, self.images, self.device]
        self._checked: dict[str, bool] = {}
        self._compared: dict[str, tuple[str, bool]] = {}  # image -> (layer compared with, is it exact truth)
        self._warnings: list[str] = []
        self._done_count = self._job_count = 0
        self._auto_model = self.session.model_path
        self.refresh_images()
        watch_layers(napari_viewer, self.refresh_images)

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

    def predict(self) -> None:
        """Predict the checked images in a worker; each prediction appears when its frame is done."""
        if self.busy:
            return
        try:
            model = str(resolve_model(self.model.text()))  # empty: the bundled default, as the CLI reads names
            names = [n for n in self.checked_images() if n in self.viewer.layers]
            if not names:
                raise InputError("check at least one image layer to predict")
        except InputError as error:
            report_error(error, "prediction")
            return
        jobs = []
        self._compared = {}
        for name in names:
            image = self.viewer.layers[name]
            truth = self.truth_for(image)
            if truth is not None:
                self._compared[name] = (truth.name, is_simulation_truth(truth))
            jobs.append(
                PredictJob(
                    name,
                    np.asarray(image.data),
                    None if truth is None else np.array(truth.data),
                    None if truth is None else truth.metadata.get("ccdseg_instances"),
                )
            )
        self.report.clear()
        self._warnings = []
        self.progress_bar.setRange(0, len(jobs))
        self.progress_bar.setValue(0)
        self.status.setText(f"predicting {len(jobs)} frame(s) …")
        worker = predict_worker(model, self.device.currentText(), jobs, self.probabilities.isChecked(), self.stop_event)
        self._done_count, self._job_count = 0, len(jobs)
        self.start_worker(worker, "prediction", on_yield=self._update, on_done=self._finished, total=len(jobs))

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
        if self.pbar is not None:
            self.pbar.update(1)
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
