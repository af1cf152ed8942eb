"""What every widget shares: a viewer, one worker at a time, a stop flag, errors as notifications."""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from napari.utils import notifications
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import InputError

log = logging.getLogger("napari_ccdseg")


def user_folder(*parts: str) -> Path:
    """A per-user data folder (created), e.g. for models and the training set."""
    try:
        from platformdirs import user_data_dir

        base = Path(user_data_dir("napari-ccdseg", appauthor=False))
    except ImportError:  # pragma: no cover - platformdirs comes with napari
        base = Path.home() / ".napari-ccdseg"
    folder = base.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def report_error(error: BaseException, what: str) -> None:
    """A worker's error as a napari notification: InputError messages as they are, others named."""
    if isinstance(error, InputError):
        message = str(error)
    else:
        log.error("%s failed", what, exc_info=(type(error), error, error.__traceback__))
        message = f"{what} failed: {type(error).__name__}: {error}"
    notifications.show_error(message)


class Session(QObject):
    """State shared by the widgets of one viewer: the last model trained, the training folder."""

    model_changed = Signal(str)
    training_folder_changed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.model_path: str = ""
        self.training_folder: str = ""

    def set_model(self, path: str | Path) -> None:
        self.model_path = str(path)
        self.model_changed.emit(self.model_path)

    def set_training_folder(self, path: str | Path) -> None:
        self.training_folder = str(path)
        self.training_folder_changed.emit(self.training_folder)


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session(viewer) -> Session:
    """The viewer's Session (one per viewer, gone with it)."""
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]


class WorkerWidget(QWidget):
    """A dock widget that runs one worker at a time, with its Stop button, progress bar and status line.

    The progress bar is the run's one progress display (napari's activity bar is not used). While a
    run goes, ``busy_widgets`` (every input that would change it) are disabled and Stop enabled;
    when it ends (done, stopped or failed) they come back. Errors reach the user as napari
    notifications, the status line says so and the bar rewinds; a stopped run with neither
    ``on_return`` nor ``on_done`` to describe its end says "stopped". Shown for the first time, the
    widget's contents move into a scroll area (:func:`make_scrollable`), so a tall dock scrolls
    instead of growing past the screen.
    """

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.stop_event = threading.Event()
        self.busy_widgets: list[QWidget] = []
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.request_stop)
        self.progress_bar = QProgressBar()
        self.status = wrapped_label("")
        self._on_yield: Callable = lambda update: None
        self._pending: deque = deque()
        self._handling = False
        self.failed = False
        """True when the last run ended with an error."""
        from ._cursor import install_status  # the status bar then shows ADU, e⁻, class and cluster under the cursor

        install_status(napari_viewer)
        # A closed dock or viewer must not leave a run going: ask it to stop (training keeps its best model).
        stop = self.stop_event
        self.destroyed.connect(lambda *_: stop.set())

    @property
    def busy(self) -> bool:
        """True while a worker runs."""
        return self.worker is not None

    def run_buttons(self, *buttons: QPushButton) -> QHBoxLayout:
        """A row of the buttons that start runs, then Stop."""
        return row(*buttons, self.stop_button)

    def set_sections(self, *sections: QWidget) -> None:
        """The widget's layout: its sections one under another, spare height at the bottom."""
        layout = QVBoxLayout(self)
        for section in sections:
            layout.addWidget(section)
        layout.addStretch(1)

    def start_worker(
        self,
        worker,
        what: str,
        on_yield: Callable | None = None,
        on_return: Callable | None = None,
        on_done: Callable[[], None] | None = None,
        total: int | None = None,
    ) -> None:
        """Wire and start ``worker`` (not yet started); the bar counts to ``total`` (None: not known yet)."""
        self.stop_event.clear()
        self.failed = False
        # napari relays worker errors with a traceback dialog; ours says what failed, once.
        try:
            worker.errored.disconnect(worker._relay_error)
        except (AttributeError, TypeError, RuntimeError):
            pass
        if on_yield is not None:
            self._on_yield, self._pending = on_yield, deque()
            worker.yielded.connect(self._handle_in_order)  # a method: disconnected when the dock goes
        if on_return is not None:
            worker.returned.connect(on_return)
        worker.errored.connect(lambda error: self._errored(error, what))

        def finished() -> None:
            self.worker = None
            try:
                if self.progress_bar.maximum() == 0:  # still "not known yet": stop the busy animation
                    self.progress_bar.setRange(0, 1)
                self._set_busy(False)
                if self.stop_event.is_set() and not self.failed and on_return is None and on_done is None:
                    self.status.setText(f"{what} stopped")
                if on_done is not None:
                    on_done()
            except RuntimeError:  # the dock or the viewer was closed while the worker ran
                return

        worker.finished.connect(finished)
        self.worker = worker
        self.progress_bar.setRange(0, total or 0)
        self.progress_bar.setValue(0)
        self._set_busy(True)
        worker.start()

    def _handle_in_order(self, update) -> None:
        """Handle the worker's updates one after another, in the order they came.

        Adding a layer can process queued events, so the next update would otherwise be handled
        inside the handling of this one, and its layers added first.
        """
        self._pending.append(update)
        if self._handling:
            return  # the loop below, further up this call stack, handles it next
        self._handling = True
        try:
            while self._pending:
                self._on_yield(self._pending.popleft())
        finally:
            self._handling = False

    def _errored(self, error: BaseException, what: str) -> None:
        self.failed = True
        report_error(error, what)
        try:
            self.status.setText(f"{what} failed: {error}")
            self.progress_bar.reset()  # nothing half done stays shown
        except RuntimeError:  # the dock was closed meanwhile
            pass

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        make_scrollable(self)
        super().showEvent(event)

    def request_stop(self) -> None:
        """Ask the running worker to stop at its next check."""
        self.stop_event.set()

    def _set_busy(self, busy: bool) -> None:
        for widget in self.busy_widgets:
            widget.setEnabled(not busy)
        self.stop_button.setEnabled(busy)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.request_stop()
        super().closeEvent(event)


def make_scrollable(widget: QWidget) -> QScrollArea | None:
    """Move ``widget``'s layout into a vertical scroll area filling the widget (once; later calls return it).

    A dock of many settings then scrolls inside a small window instead of pushing the window
    past the screen. Children keep their parents' objects and connections: only the layout moves.
    """
    existing = getattr(widget, "_ccdseg_scroll", None)
    if existing is not None:
        return existing
    layout = widget.layout()
    if layout is None:
        return None
    body = QWidget()
    body.setLayout(layout)  # Qt moves the layout and re-parents its widgets
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    scroll.setWidget(body)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    widget._ccdseg_scroll = scroll
    return scroll


# ---------------------------------------------------------------- small form helpers


def spin(value: int, low: int, high: int, tip: str = "", step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def dspin(value: float, low: float, high: float, tip: str = "", step: float = 0.1, decimals: int = 2) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def combo(items: Sequence[str], current: str | None = None, tip: str = "") -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    if current is not None:
        box.setCurrentText(current)
    box.setToolTip(tip)
    return box


def row(*widgets: QWidget) -> QHBoxLayout:
    """Widgets side by side."""
    layout = QHBoxLayout()
    for widget in widgets:
        layout.addWidget(widget)
    return layout


def form(rows: Sequence, title: str = "") -> QWidget:
    """A form: each row a widget or layout across it, or a (label, widget or layout) pair; a group box if titled."""
    box = QGroupBox(title) if title else QWidget()
    layout = QFormLayout(box)
    if not title:
        layout.setContentsMargins(0, 0, 0, 0)
    for item in rows:
        layout.addRow(*(item if isinstance(item, tuple) else (item,)))
    return box


def wrapped_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    label.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)
    return label


class PathEdit(QWidget):
    """A line edit with a "…" button opening a file or folder dialog."""

    def __init__(self, text: str = "", mode: str = "open", filter: str = "", tip: str = "") -> None:
        super().__init__()
        self.mode = mode
        self.filter = filter
        self.edit = QLineEdit(text)
        self.edit.setToolTip(tip)
        self.button = QPushButton("…")
        self.button.setFixedWidth(28)
        self.button.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(self.button)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt style
        self.edit.setText(text)

    def folder_or_ask(self, title: str) -> str:
        """The folder typed here, else one picked in a dialog titled ``title`` (kept here); "" when cancelled."""
        folder = self.text()
        if not folder:
            folder = QFileDialog.getExistingDirectory(self, title, str(Path.home()))
            self.setText(folder)
        return folder

    def _browse(self) -> None:
        start = self.text() or str(Path.home())
        if self.mode == "folder":
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        elif self.mode == "save":
            path, _ = QFileDialog.getSaveFileName(self, "Save as", start, self.filter)
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Open", start, self.filter)
        if path:
            self.edit.setText(path)


class LayerCombo(QComboBox):
    """The names of the viewer's layers of one type, kept current as layers come, go or are renamed.

    The selection survives a refresh when its layer still exists; ``layer()`` is None when the
    chosen layer was deleted (or there is none), so a widget never points at a dead layer.
    """

    def __init__(self, viewer, layer_type, allow_none: str | None = None, accept: Callable | None = None) -> None:
        super().__init__()
        from ._layers import watch_layers

        self.viewer = viewer
        self.layer_type = layer_type
        self.allow_none = allow_none
        self.accept = accept or (lambda layer: True)
        self.refresh()
        watch_layers(viewer, self.refresh)

    def refresh(self, *_) -> None:
        current = self.currentText()
        names = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, self.layer_type) and self.accept(layer)
        ]
        if self.allow_none is not None:
            names.insert(0, self.allow_none)
        if names == [self.itemText(i) for i in range(self.count())]:
            return
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        for index, name in enumerate(names):
            layer = self.viewer.layers[name] if name in self.viewer.layers else None
            if layer is not None:
                self.setItemData(index, str(layer.metadata.get("ccdseg_frame") or name), Qt.ToolTipRole)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())

    def layer(self):
        """The chosen layer, or None."""
        name = self.currentText()
        if name and name != self.allow_none and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if isinstance(layer, self.layer_type):
                return layer
        return None


# ---------------------------------------------------------------- plots in napari's colours

PLOT_BACKGROUND, PLOT_INK = "#262930", "#d0d3d8"
"""Plots in the widgets are drawn on napari's dark background, so colours read as on the canvas."""


def dark_figure(margins: dict[str, float] | None = None):
    """A 4.2 × 2.8 in figure on napari's background, its Qt canvas and its axes. ``margins``
    (``subplots_adjust``'s) fix the layout; without them ``tight_layout`` finds it on each draw."""
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2, 2.8), facecolor=PLOT_BACKGROUND)
    if margins is None:
        figure.set_layout_engine("tight")
    else:
        figure.subplots_adjust(**margins)
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumHeight(220)
    return figure, canvas, figure.subplots()


def clear_dark_axes(axes, xlabel: str, ylabel: str) -> None:
    """Empty ``axes`` for a redraw, in napari's colours, with its axis labels."""
    axes.clear()
    axes.set_facecolor(PLOT_BACKGROUND)
    for spine in axes.spines.values():
        spine.set_color(PLOT_INK)
    axes.tick_params(labelsize=7, colors=PLOT_INK, which="both")
    axes.set_xlabel(xlabel, fontsize=8, color=PLOT_INK)
    axes.set_ylabel(ylabel, fontsize=8, color=PLOT_INK)


def dark_legend(axes, **kwargs) -> None:
    """The axes' legend in napari's colours (``kwargs`` go to ``axes.legend``)."""
    legend = axes.legend(fontsize=6, facecolor=PLOT_BACKGROUND, edgecolor=PLOT_INK, **kwargs)
    for text in legend.get_texts():
        text.set_color(PLOT_INK)
