"""Load dataset folder widget: every frame ``X.<ext>`` of a folder with its ``X_labels`` map as a pair.

Single files go through File > Open or drag-and-drop (the plugin's reader); this widget reads a
whole folder with the same reader, frame by frame in a worker.
"""

from __future__ import annotations

from qtpy.QtWidgets import QPushButton

from ._common import PathEdit, WorkerWidget, form, report_error
from ._layers import add_frame, set_labels
from .workers import LoadedUpdate, load_dataset_worker
from ..errors import InputError
from ..updates import LogUpdate


class DatasetWidget(WorkerWidget):
    """Choose a folder, Load: Image layers ``X`` and Labels layers ``X labels`` where a map exists."""

    def __init__(self, napari_viewer, parent=None) -> None:
        super().__init__(napari_viewer, parent)
        self.folder = PathEdit(mode="folder", tip="a folder of frames X.<fits|npy|tif|png> and maps X_labels.png")
        self.load_button = QPushButton("Load folder")
        self.load_button.clicked.connect(self.load)
        self.status.setText("Frames X.<fits|fz|fits.gz|npy|tif|png> come in as images, their X_labels maps as 'X labels'.")
        self.set_sections(form([("Folder", self.folder), self.run_buttons(self.load_button), self.progress_bar, self.status]))
        self.busy_widgets = [self.load_button, self.folder]
        self.loaded: list[str] = []

    def load(self) -> None:
        """Read the folder in a worker; layers appear file by file."""
        if self.busy:
            return
        folder = self.folder.text()
        if not folder:
            report_error(InputError("choose a dataset folder first"), "loading")
            return
        self.loaded = []
        worker = load_dataset_worker(folder, self.stop_event)
        self.start_worker(worker, "loading dataset", on_yield=self._add, on_done=self._done)

    def _add(self, update: LoadedUpdate | LogUpdate) -> None:
        if isinstance(update, LogUpdate):
            self.status.setText(update.message)
            return
        self.progress_bar.setRange(0, update.n)
        self.progress_bar.setValue(update.index)
        for data, kwargs, kind in update.layers:
            name = kwargs["name"]
            if kind == "image":
                add_frame(self.viewer, name, data, kwargs.get("metadata"))
            else:
                set_labels(self.viewer, name, data, kwargs.get("metadata"))
            self.loaded.append(name)

    def _done(self) -> None:
        # Not counted from self.loaded: adding a layer can process queued events (re-entrantly),
        # so 'finished' may run before the last layers are appended.
        self.status.setText(self.status.text() + (" — stopped" if self.stop_event.is_set() else " — loaded"))
