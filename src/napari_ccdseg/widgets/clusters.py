"""Clusters widget: the calibrated cluster catalogue of an image and its class map, in the viewer.

Run does what ``ccdseg catalogue`` does, in a worker: calibrate the image (gain, read noise, dark
current and the zero-electron pedestal from the pixel histogram, with the class map's cluster and
hot pixels left out; a given gain or calibration file when the peaks are not resolved), split the
cluster pixels into 8-connected clusters and measure each (charge, energy, centroid, spread), then
name its particle type. The class map is read when Run is pressed, so hand corrections of it change
the catalogue.

Results: a Points layer ``<image> clusters`` at the charge-weighted centroids with the catalogue as
its features (the status bar shows the hovered cluster's row), ringed in its particle type's colour;
a legend with per-type counts that is also the type filter; energy and size filters acting on the
table, the points and the spectrum; a sortable table (selecting a row centres the view on that
cluster); the energy spectrum; the calibration fit; Export to CSV + Parquet. The calibration is
stored in the image layer's ``metadata["calibration"]`` (``Calibration.to_dict()``), where other
widgets find it to show electrons.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Points
from napari.qt.threading import thread_worker
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..calibrate import EV_PER_E_DEFAULT, Calibration
from ..catalogue import CALIBRATION_EXCLUDED
from ..errors import InputError
from ..io import Frame
from ..report_text import plus_minus
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
from ._layers import frame_layers, frame_shape, full_name, labels_name, own_class_map, place_like, watch_layers

UNCLASSIFIED = ""
"""The ``particle`` value of a cluster no classifier named (shown as "unclassified")."""

TYPE_COLOURS: dict[str, str] = {
    "point": "#ffd400",
    "muon": "#00e5ff",
    "electron": "#ff4fd8",
    "alpha": "#ff8c00",
    "trail": "#7cff4f",
    "few-electron": "#b388ff",
    UNCLASSIFIED: "#ffffff",
}
"""Ring colour of each particle type: none of them the red of the cluster class under the ring."""

OTHER_COLOUR = "#a0a0a0"
"""A type the classifier knows and this table does not (a newer model)."""

TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (catalogue column, header, format)
    ("cluster_id", "id", "{:d}"),
    ("particle", "type", "{}"),
    ("particle_score", "score", "{:.2f}"),
    ("energy_kev", "E (keV)", "{:.3f}"),
    ("charge_e", "Q (e⁻)", "{:.1f}"),
    ("npix", "npix", "{:d}"),
    ("x", "x", "{:.1f}"),
    ("y", "y", "{:.1f}"),
    ("sigma_x", "σx", "{:.2f}"),
    ("sigma_y", "σy", "{:.2f}"),
    ("qmax_e", "Qmax (e⁻)", "{:.1f}"),
    ("depth_um", "depth (µm)", "{:.0f}"),
    ("depth_err_um", "± (µm)", "{:.0f}"),
)

HOVER_FIRST = ("particle", "energy_kev", "npix", "charge_e", "cluster_id")
"""Feature columns the status bar shows first when the cursor is on a ring (it shows them all, in order)."""

RESIZE_ROWS = 50
"""Column widths are fitted to this many rows: fitting all of a big frame's clusters takes seconds."""

FILTER_BOX_PX = 80

MIN_VIEW_PX = 64
"""Selecting a cluster zooms to show at least this many image pixels around it."""


def type_colour(particle: str) -> str:
    return TYPE_COLOURS.get(particle, OTHER_COLOUR)


def type_name(particle: str) -> str:
    return particle or "unclassified"


# ---------------------------------------------------------------- settings, jobs, results


@dataclass(frozen=True)
class ClusterSettings:
    """The form's calibration and energy settings, read in one place."""

    gain: float | None
    """ADU per electron, used when the frame's electron peaks are not resolved; None: header or file."""
    calibration_file: str
    """A ``calibration.json`` whose gain is used when the peaks are not resolved; "" for none."""
    ev_per_e: float = EV_PER_E_DEFAULT


@dataclass(frozen=True)
class ClusterJob:
    """One image layer's frame and the class map to catalogue it with."""

    name: str
    """The image layer's name."""
    frame: Frame
    """Pixels, name, source file, header, HDU and EXTNAME, as the CLI reads them."""
    labels: np.ndarray


@dataclass(frozen=True)
class CataloguedUpdate:
    """The catalogue of one image: its calibration, the table and the calibration fit as a PNG."""

    name: str
    calibration: Calibration
    table: pd.DataFrame
    fit_png: bytes


@dataclass(frozen=True)
class ClusterFilter:
    """Which catalogue rows to show: an energy window, a size window and the checked types."""

    energy_min_kev: float = -np.inf
    energy_max_kev: float = np.inf
    npix_min: int = 0
    npix_max: int = np.iinfo(np.int64).max
    types: frozenset[str] | None = None
    """None: every type."""

    def mask(self, table: pd.DataFrame) -> np.ndarray:
        """True for each row that passes, in table order."""
        energy = table["energy_kev"].to_numpy(float)
        npix = table["npix"].to_numpy()
        keep = (energy >= self.energy_min_kev) & (energy <= self.energy_max_kev)
        keep &= (npix >= self.npix_min) & (npix <= self.npix_max)
        if self.types is not None:
            keep &= table["particle"].isin(list(self.types)).to_numpy()
        return keep


# ---------------------------------------------------------------- worker

CATALOGUE_STEPS = 2
"""calibrate, cluster, type and depth; plot the fit: the worker's progress steps."""


def _previous_calibration(path: str, frame: Frame) -> Calibration:
    """The amplifier of a calibration file that serves ``frame`` (``calibrate.find_calibration``'s rules)."""
    from ..calibrate import find_calibration, read_calibration
    from ..catalogue import frame_file_name

    calibrations = read_calibration(path)
    name = frame_file_name(frame)
    match = find_calibration(calibrations, name, frame.hdu, frame.extname)
    if match is None:
        raise InputError(
            f"{path}: none of its {len(calibrations)} amplifier(s) is {name} HDU {frame.hdu}"
            + (f" ({frame.extname})" if frame.extname else "")
        )
    return match


@thread_worker(ignore_errors=True)  # errors go to the widget (a notification), not re-raised
def catalogue_worker(
    job: ClusterJob, settings: ClusterSettings, stop: threading.Event
) -> Iterator[LogUpdate | StepUpdate | CataloguedUpdate]:
    """Calibrate, catalogue and type the clusters of one frame (``catalogue.catalogue_frame``, as
    ``ccdseg catalogue``), draw the calibration fit; yields progress and one CataloguedUpdate.

    The core calls report no progress of their own; Stop is honoured between them.
    """
    from ..calibrate import plot_calibration
    from ..catalogue import catalogue_frame

    def progress(step: int, message: str) -> Iterator[LogUpdate | StepUpdate]:
        yield StepUpdate(1, 1, step, CATALOGUE_STEPS)
        yield LogUpdate(message)

    previous = _previous_calibration(settings.calibration_file, job.frame) if settings.calibration_file else None
    yield from progress(
        0, f"{job.name}: calibrating (fitting the pixel histogram), clustering, naming particle types and point depths …"
    )
    result = catalogue_frame(
        job.frame, job.labels, gain=settings.gain, previous=previous, ev_per_e=settings.ev_per_e, allow_empty=True
    )
    calibration, table = result.calibration, result.table
    if stop.is_set():
        yield LogUpdate("stopped: no catalogue")
        return
    yield from progress(1, f"{job.name}: {len(table)} clusters; drawing the calibration fit …")
    exclude = np.isin(job.labels, CALIBRATION_EXCLUDED)  # as catalogue_frame's calibration
    with tempfile.TemporaryDirectory(prefix="ccdseg-fit-") as folder:
        png = plot_calibration(calibration, job.frame.data, Path(folder) / "calibration.png", exclude=exclude).read_bytes()
    yield StepUpdate(1, 1, CATALOGUE_STEPS, CATALOGUE_STEPS)
    yield CataloguedUpdate(job.name, calibration, table.reset_index(drop=True), png)


# ---------------------------------------------------------------- table


class CatalogueModel(QAbstractTableModel):
    """The catalogue's main columns as a read-only Qt model that filters (a row mask) and sorts itself.

    Sorting and filtering are numpy operations on whole columns, so a 4096² frame's thousands of
    clusters sort in milliseconds (a QSortFilterProxyModel would call back into Python per comparison).
    ``order`` maps view rows to table rows.
    """

    def __init__(self) -> None:
        super().__init__()
        self.table = pd.DataFrame()
        self.columns: list[tuple[str, str, str]] = []
        self._values: list[np.ndarray] = []
        self.mask = np.zeros(0, dtype=bool)
        self.sort_key: tuple[int, bool] | None = None
        """(column, descending) of the last sort, kept across new tables and filters."""
        self.order = np.zeros(0, dtype=np.int64)

    def set_table(self, table: pd.DataFrame) -> None:
        self.table = table
        self.columns = [column for column in TABLE_COLUMNS if column[0] in table.columns]
        self._values = [table[name].to_numpy() for name, _, _ in self.columns]
        self.set_mask(np.ones(len(table), dtype=bool))

    def set_mask(self, mask: np.ndarray) -> None:
        """Show only the table rows where ``mask`` is True (in the current sort order)."""
        self.beginResetModel()
        self.mask = np.asarray(mask, dtype=bool)
        self.order = self._sorted(np.flatnonzero(self.mask))
        self.endResetModel()

    def _sorted(self, rows: np.ndarray) -> np.ndarray:
        if self.sort_key is None or self.sort_key[0] >= len(self.columns):
            return rows
        column, descending = self.sort_key
        values = self._values[column][rows]
        if values.dtype == object:
            values = values.astype(str)
        ranked = rows[np.argsort(values, kind="stable")]
        return ranked[::-1] if descending else ranked

    def sort(self, column: int, order=Qt.AscendingOrder) -> None:
        """Qt's sort request (a header click): the shown rows by that column's raw values."""
        self.sort_key = (column, order == Qt.DescendingOrder)
        self.set_mask(self.mask)

    def table_row(self, view_row: int) -> int:
        """The table position of a view row."""
        return int(self.order[view_row])

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else self.order.size

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index, role=Qt.DisplayRole):
        if role == Qt.DisplayRole:
            name, _, fmt = self.columns[index.column()]
            value = self._values[index.column()][self.order[index.row()]]
            if name == "particle":
                return type_name(value)
            if isinstance(value, float | np.floating) and not np.isfinite(value):
                return ""
            return fmt.format(value.item() if hasattr(value, "item") else value)
        if role == Qt.TextAlignmentRole and self.columns[index.column()][0] != "particle":
            return int(Qt.AlignRight | Qt.AlignVCenter)
        return None

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802
        if role == Qt.DisplayRole and orientation == Qt.Horizontal and section < len(self.columns):
            return self.columns[section][1]
        return None


# ---------------------------------------------------------------- legend and plots


class TypeLegend(QWidget):
    """One checkable row per particle type present: colour swatch, name and count; unchecked types are hidden."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.boxes: dict[str, QCheckBox] = {}
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)

    def set_counts(self, counts: dict[str, int]) -> None:
        """Rows for these types (check states of types seen before are kept)."""
        checked = {particle: box.isChecked() for particle, box in self.boxes.items()}
        for box in self.boxes.values():
            self.grid.removeWidget(box)
            box.deleteLater()
        self.boxes = {}
        order = [*TYPE_COLOURS, *sorted(set(counts) - set(TYPE_COLOURS))]
        for particle in [p for p in order if p in counts]:
            box = QCheckBox(f"{type_name(particle)}  {counts[particle]}")
            pixmap = QPixmap(12, 12)
            pixmap.fill(QColor(type_colour(particle)))
            box.setIcon(QIcon(pixmap))
            box.setChecked(checked.get(particle, True))
            box.toggled.connect(lambda *_: self.changed.emit())
            index = len(self.boxes)
            self.grid.addWidget(box, index // 3, index % 3)
            self.boxes[particle] = box

    def checked(self) -> frozenset[str]:
        return frozenset(particle for particle, box in self.boxes.items() if box.isChecked())


class SpectrumPlot:
    """dN/dE of the shown clusters per particle type, on log axes with 68 % Poisson intervals:
    the binning and intervals of the CLI's spectrum.png (``catalogue_report``), in the type colours."""

    def __init__(self) -> None:
        # Fixed margins: tight_layout measures every tick label on each redraw (a second with a big frame).
        self.figure, self.canvas, self.axes = dark_figure(dict(left=0.17, right=0.97, bottom=0.16, top=0.9))
        self.draw(pd.DataFrame({"energy_kev": [], "particle": []}))

    def draw(self, table: pd.DataFrame) -> None:
        from ..catalogue_report import energy_bin_edges, garwood_interval

        axes = self.axes
        clear_dark_axes(axes, "cluster energy (keV)", "dN/dE (clusters / keV)")
        energy = table["energy_kev"].to_numpy(np.float64)
        edges = energy_bin_edges(energy)
        if edges.size == 0:
            axes.set_title("no cluster with positive energy shown", fontsize=8, color=PLOT_INK)
            self.canvas.draw_idle()
            return
        widths = np.diff(edges)
        centres = np.sqrt(edges[:-1] * edges[1:])
        particles = table["particle"].fillna("").astype(str).to_numpy()
        present = set(particles)
        for particle in [*[p for p in TYPE_COLOURS if p in present], *sorted(present - set(TYPE_COLOURS))]:
            counts, _ = np.histogram(energy[particles == particle], edges)
            low, high = garwood_interval(counts)
            shown = counts > 0
            colour = type_colour(particle)
            axes.errorbar(
                centres[shown], (counts / widths)[shown],
                xerr=[(centres - edges[:-1])[shown], (edges[1:] - centres)[shown]],
                yerr=[((counts - low) / widths)[shown], ((high - counts) / widths)[shown]],
                fmt="o", ms=3, lw=0.8, color=colour, label=f"{type_name(particle)} ({int(counts.sum())})",
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        off_axis = int(np.sum(~(energy > 0)))
        note = f" ({off_axis} with E ≤ 0 off the log axis)" if off_axis else ""
        axes.set_title(f"{len(table)} clusters shown{note}; 68 % Poisson intervals", fontsize=8, color=PLOT_INK)
        axes.grid(True, which="major", alpha=0.2)
        dark_legend(axes, loc="upper right")
        self.canvas.draw_idle()


def calibration_text(cal: Calibration) -> str:
    """The fitted (or given) numbers with their uncertainties and units, one per line."""
    lines = [f"<b>{cal.frame}</b> HDU {cal.hdu}{' ' + cal.extname if cal.extname else ''} — method: {cal.method}"]
    lines.append(f"gain {plus_minus(cal.gain_adu_per_e, cal.gain_err)} ADU/e⁻")
    lines.append(f"read noise σ {plus_minus(cal.noise_e, cal.noise_err)} e⁻ ({cal.noise_adu:.3g} ADU)")
    if np.isfinite(cal.dark_current_e_per_px):
        lines.append(f"dark current λ {plus_minus(cal.dark_current_e_per_px, cal.dark_err)} e⁻/px")
    else:
        lines.append("dark current λ: not measured (electron peaks not resolved)")
    lines.append(f"zero-electron pedestal {plus_minus(cal.pedestal_adu, cal.pedestal_err)} ADU")
    return "<br>".join(lines)


# ---------------------------------------------------------------- widget


class ClustersWidget(WorkerWidget):
    """Image + class map -> calibrated cluster catalogue: points, legend, filters, table, spectrum, fit, export."""

    def __init__(self, napari_viewer, parent=None) -> None:
        super().__init__(napari_viewer, parent)
        self.image = LayerCombo(napari_viewer, Image, accept=lambda layer: any(layer is f for f in frame_layers(napari_viewer)))
        self.image.setToolTip("the frame to catalogue (ADU or electrons)")
        self.class_map = LayerCombo(napari_viewer, Labels)
        self.class_map.setToolTip("its class map: cluster pixels (3) are grouped into clusters; paint it to correct them")
        self.gain = dspin(0.0, 0.0, 1e5, step=0.1, decimals=3,
                          tip="ADU per electron, used when the frame's electron peaks are not resolved (single-sample "
                              "frames); auto: the header's GAIN keyword, else the calibration file")
        self.gain.setSpecialValueText("auto")
        self.calibration_file = PathEdit(mode="open", filter="Calibration (*.json)",
                                         tip="optional: calibration.json (ccdseg calibrate) to take the gain from when peaks are not resolved")
        self.ev_per_e = dspin(EV_PER_E_DEFAULT, 0.5, 100.0, "ionisation energy per electron–hole pair (3.75 eV in silicon)",
                              step=0.01, decimals=3)
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("calibrate, catalogue and classify the clusters of the image (reads the class map now)")
        self.run_button.clicked.connect(self.run)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.request_stop)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, CATALOGUE_STEPS)
        self.progress_bar.setValue(0)
        self.status = wrapped_label("")

        # filters
        self.energy_min = dspin(0.0, 0.0, 1e5, "lowest energy shown (keV)", step=0.1, decimals=2)
        self.energy_max = dspin(0.0, 0.0, 1e5, "highest energy shown (keV)", step=1.0, decimals=2)
        self.energy_min.setSpecialValueText("−∞")
        self.energy_max.setSpecialValueText("∞")
        self.npix_min = spin(0, 0, 10**7, "smallest size shown (pixels)")
        self.npix_max = spin(0, 0, 10**7, "largest size shown (pixels)")
        self.npix_max.setSpecialValueText("∞")
        for box in (self.energy_min, self.energy_max, self.npix_min, self.npix_max):
            box.setMinimumWidth(FILTER_BOX_PX)  # the dock stays narrow; their text scrolls
        self.legend = TypeLegend()
        self.shown_line = wrapped_label("")
        self.tooltips = QCheckBox("Hovering a ring shows its catalogue row")
        self.tooltips.setToolTip("napari's layer tooltips, for the selected layer (the status bar reports the frame)")
        self.tooltips.setChecked(True)
        self.tooltips.toggled.connect(self._tooltips_toggled)

        # results
        self.model = CatalogueModel()
        self.table_view = QTableView()
        self.table_view.setModel(self.model)
        self.table_view.setSortingEnabled(True)
        self.table_view.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table_view.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table_view.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table_view.verticalHeader().setVisible(False)
        self.table_view.verticalHeader().setDefaultSectionSize(18)
        header = self.table_view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Interactive)
        header.setResizeContentsPrecision(RESIZE_ROWS)  # widths from a sample of rows, not all of them
        self.table_view.setMinimumHeight(220)
        self.table_view.selectionModel().currentRowChanged.connect(self._row_chosen)
        self.model.modelReset.connect(self._table_reset)
        self.spectrum = SpectrumPlot()
        self.calibration_label = wrapped_label("")
        self.fit_image = QLabel()
        self.fit_image.setAlignment(Qt.AlignHCenter | Qt.AlignTop)
        fit_page = QWidget()
        fit_layout = QVBoxLayout(fit_page)
        fit_layout.addWidget(self.calibration_label)
        fit_layout.addWidget(self.fit_image)
        fit_layout.addStretch(1)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.table_view, "Table")
        self.tabs.addTab(self.spectrum.canvas, "Spectrum")
        self.tabs.addTab(fit_page, "Calibration")

        self.export_folder = PathEdit(mode="folder", tip="folder for clusters.csv, clusters.parquet and calibration.json")
        self.export_shown = QCheckBox("Only the clusters shown")
        self.export_shown.setToolTip("export the rows the filters leave (else the whole catalogue)")
        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(self.export)
        self.export_status = wrapped_label("")

        form = QFormLayout()
        form.addRow("Image", self.image)
        form.addRow("Class map", self.class_map)
        calibration_box = QGroupBox("If electron peaks are not resolved")
        calibration_form = QFormLayout(calibration_box)
        calibration_form.addRow("Gain (ADU/e⁻)", self.gain)
        calibration_form.addRow("Calibration file", self.calibration_file)
        form_energy = QFormLayout()
        form_energy.addRow("eV per e⁻", self.ev_per_e)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        filter_box = QGroupBox("Show")
        filters = QGridLayout(filter_box)
        filters.addWidget(QLabel("Energy (keV)"), 0, 0)
        filters.addWidget(self.energy_min, 0, 1)
        filters.addWidget(QLabel("–"), 0, 2)
        filters.addWidget(self.energy_max, 0, 3)
        filters.addWidget(QLabel("Size (px)"), 1, 0)
        filters.addWidget(self.npix_min, 1, 1)
        filters.addWidget(QLabel("–"), 1, 2)
        filters.addWidget(self.npix_max, 1, 3)
        filters.addWidget(self.legend, 2, 0, 1, 4)
        filters.addWidget(self.shown_line, 3, 0, 1, 4)
        filters.addWidget(self.tooltips, 4, 0, 1, 4)
        export_box = QGroupBox("Export")
        export = QFormLayout(export_box)
        export.addRow("Folder", self.export_folder)
        export_row = QHBoxLayout()
        export_row.addWidget(self.export_shown)
        export_row.addWidget(self.export_button)
        export.addRow(export_row)
        export.addRow(self.export_status)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(calibration_box)
        layout.addLayout(form_energy)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(filter_box)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(export_box)

        self.busy_widgets = [self.run_button, self.image, self.class_map, calibration_box, self.ev_per_e]
        self.results: dict[str, CataloguedUpdate] = {}
        self.shown: CataloguedUpdate | None = None
        self._fitted_columns: CataloguedUpdate | None = None

        self.image.currentTextChanged.connect(self._image_chosen)
        for box in (self.energy_min, self.energy_max, self.npix_min, self.npix_max):
            box.valueChanged.connect(self.apply_filter)
        self.legend.changed.connect(self.apply_filter)
        watch_layers(napari_viewer, self._layers_changed)
        self._image_chosen(self.image.currentText())

    # ------------------------------------------------------------ inputs

    def _image_chosen(self, name: str) -> None:
        """Propose the image's own class map, and show its catalogue if it has one."""
        layer = self.image.layer()
        own = own_class_map(self.viewer, layer) if layer is not None else None
        if own is not None:
            self.class_map.setCurrentText(own)
        if name in self.results:
            self.show_result(self.results[name])

    def _layers_changed(self) -> None:
        """Forget the catalogues of image layers that are gone (their points go with the user)."""
        for name in [n for n in self.results if n not in self.viewer.layers]:
            del self.results[name]

    def settings(self) -> ClusterSettings:
        gain = self.gain.value()
        return ClusterSettings(
            gain=gain if gain > 0 else None,
            calibration_file=self.calibration_file.text(),
            ev_per_e=self.ev_per_e.value(),
        )

    def job(self) -> ClusterJob:
        """The chosen image and class map, copied (painting while the worker runs cannot race it)."""
        image = self.image.layer()
        labels = self.class_map.layer()
        if image is None:
            raise InputError("choose an image layer to catalogue")
        if labels is None:
            raise InputError(f"'{image.name}': choose its class map (a Labels layer, e.g. '{labels_name(image.name, 'prediction')}')")
        if tuple(labels.data.shape) != frame_shape(image):
            rows, cols = frame_shape(image)
            raise InputError(
                f"'{labels.name}' is {labels.data.shape[0]}×{labels.data.shape[1]}, "
                f"image '{image.name}' is {rows}×{cols}: choose the class map of this image"
            )
        metadata = image.metadata
        source = metadata.get("source")
        frame = Frame(
            data=np.asarray(image.data),
            name=full_name(image),
            source=Path(source) if source else None,
            header=metadata.get("header") or {},
            hdu=int(metadata.get("ccdseg_hdu") or 0),
            extname=metadata.get("ccdseg_extname"),
        )
        return ClusterJob(image.name, frame, np.array(labels.data, dtype=np.uint8))

    # ------------------------------------------------------------ run

    def run(self) -> None:
        """Catalogue the chosen image with its class map, in a worker."""
        if self.busy:
            return
        try:
            job = self.job()
            settings = self.settings()
        except InputError as error:
            report_error(error, "cataloguing")
            return
        self.progress_bar.setValue(0)
        self.status.setText(f"cataloguing {job.name} …")
        worker = catalogue_worker(job, settings, self.stop_event)
        self.start_worker(worker, "cataloguing", on_yield=self._update, total=CATALOGUE_STEPS)

    def _update(self, update) -> None:
        if isinstance(update, LogUpdate):
            self.status.setText(update.message)
        elif isinstance(update, StepUpdate):
            self.progress_bar.setValue(update.step)
        elif isinstance(update, CataloguedUpdate):
            self._catalogued(update)

    def _catalogued(self, update: CataloguedUpdate) -> None:
        image = self.viewer.layers[update.name] if update.name in self.viewer.layers else None
        if image is not None:
            image.metadata["calibration"] = update.calibration.to_dict()
        self.results[update.name] = update
        self.add_points(update, image)
        self.show_result(update)
        cal = update.calibration
        self.status.setText(
            f"{update.name}: {len(update.table)} clusters; gain {plus_minus(cal.gain_adu_per_e, cal.gain_err)} ADU/e⁻ "
            f"({cal.method}), noise {plus_minus(cal.noise_e, cal.noise_err)} e⁻"
        )

    # ------------------------------------------------------------ results

    def points_name(self, name: str) -> str:
        return f"{name} clusters"

    def add_points(self, update: CataloguedUpdate, image: Image | None) -> Points:
        """The ``<image> clusters`` layer at the centroids (row, col) = (y, x); a re-run updates it in place."""
        table = update.table
        extent = np.maximum(table["xmax"] - table["xmin"], table["ymax"] - table["ymin"]).to_numpy(float) + 1
        style = {
            "border_color": [type_colour(p) for p in table["particle"]] if len(table) else "white",
            "size": np.maximum(extent + 4, 7) if len(table) else 7,
        }
        data = table[["y", "x"]].to_numpy(float).reshape(-1, 2)
        first = [name for name in HOVER_FIRST if name in table.columns]
        features = table[first + [name for name in table.columns if name not in first]]
        layer = self.points_layer(update.name)
        if layer is None:
            layer = self.viewer.add_points(
                data, ndim=2, name=self.points_name(update.name), features=features, face_color="transparent",
                border_width=0.15, border_width_is_relative=True, metadata={"ccdseg_source": update.name}, **style,
            )
        else:  # in place: removing a layer makes napari collect garbage (0.5 s with a big frame open)
            layer.selected_data = set()
            layer.data = data
            layer.features = features
            layer.shown = np.ones(len(table), dtype=bool)
            for name, value in style.items():
                setattr(layer, name, value)
        if image is not None:
            place_like(layer, image)  # on its amplifier, wherever the mosaic put it
        self._tooltips_toggled(self.tooltips.isChecked())
        return layer

    def _tooltips_toggled(self, on: bool) -> None:
        self.viewer.tooltip.visible = on

    def points_layer(self, name: str) -> Points | None:
        layer_name = self.points_name(name)
        if layer_name in self.viewer.layers and isinstance(self.viewer.layers[layer_name], Points):
            return self.viewer.layers[layer_name]
        return None

    def show_result(self, update: CataloguedUpdate) -> None:
        """Fill the legend, table, spectrum and calibration page with one image's catalogue."""
        self.shown = update
        table = update.table
        self.model.set_table(table)
        self.legend.blockSignals(True)
        self.legend.set_counts(table["particle"].value_counts().to_dict())
        self.legend.blockSignals(False)
        self.calibration_label.setText(calibration_text(update.calibration))
        pixmap = QPixmap()
        pixmap.loadFromData(update.fit_png, "PNG")
        self.fit_image.setPixmap(pixmap.scaledToWidth(440, Qt.SmoothTransformation))
        self.apply_filter()

    def current_filter(self) -> ClusterFilter:
        energy_min = self.energy_min.value()
        energy_max = self.energy_max.value()
        npix_max = self.npix_max.value()
        return ClusterFilter(
            energy_min_kev=energy_min if energy_min > 0 else -np.inf,  # 0: keep clusters of E <= 0 too
            energy_max_kev=energy_max if energy_max > 0 else np.inf,
            npix_min=self.npix_min.value(),
            npix_max=npix_max if npix_max > 0 else np.iinfo(np.int64).max,
            types=self.legend.checked(),
        )

    def apply_filter(self, *_) -> None:
        """Show only the clusters that pass the filters: in the table, the points and the spectrum."""
        if self.shown is None:
            return
        table = self.shown.table
        mask = self.current_filter().mask(table)
        self.model.set_mask(mask)
        layer = self.points_layer(self.shown.name)
        if layer is not None and len(layer.data) == len(mask):
            layer.shown = mask
        self.spectrum.draw(table[mask])
        self.shown_line.setText(f"{int(mask.sum())} of {len(table)} clusters shown")

    def _table_reset(self) -> None:
        """After a new table, filter or sort: fit the column widths, once per new table (the user may resize them)."""
        if self.shown is not None and self._fitted_columns is not self.shown:
            self._fitted_columns = self.shown
            self.table_view.resizeColumnsToContents()

    def _row_chosen(self, current, _previous=None) -> None:
        if current.isValid() and self.shown is not None:
            self.centre_on(self.model.table_row(current.row()))

    def centre_on(self, row: int) -> None:
        """Centre the view on catalogue row ``row`` and zoom so the cluster and its surroundings fill it."""
        update = self.shown
        cluster = update.table.iloc[row]
        layer = self.points_layer(update.name)
        image = self.viewer.layers[update.name] if update.name in self.viewer.layers else None
        placed = layer if layer is not None else image
        position = np.array([cluster["y"], cluster["x"]], dtype=float)
        centre = placed.data_to_world(position) if placed is not None else position
        scale = float(np.max(np.abs(placed.scale[-2:]))) if placed is not None else 1.0
        extent = max(cluster["xmax"] - cluster["xmin"], cluster["ymax"] - cluster["ymin"]) + 1
        window = max(MIN_VIEW_PX, 4 * extent) * scale
        camera = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera
        canvas = self.viewer.canvas.size if hasattr(self.viewer, "canvas") else self.viewer._canvas_size
        camera.center = tuple(float(c) for c in np.asarray(centre)[-2:])
        camera.zoom = min(canvas) / window
        if layer is not None:
            self.viewer.layers.selection.active = layer  # its tooltips and highlight show
            layer.selected_data = {row}

    # ------------------------------------------------------------ export

    def export(self, *_) -> list[Path]:
        """Write clusters.csv, clusters.parquet and calibration.json of the shown catalogue (atomically)."""
        from ..calibrate import write_calibration
        from ..catalogue import write_catalogue

        if self.shown is None:
            report_error(InputError("run the catalogue first: there is nothing to export"), "export")
            return []
        folder = self.export_folder.folder_or_ask("Export the catalogue to")
        if not folder:
            return []
        table = self.shown.table[self.model.mask] if self.export_shown.isChecked() else self.shown.table
        try:
            written = [*write_catalogue(folder, table.reset_index(drop=True)),
                       write_calibration(Path(folder) / "calibration.json", [self.shown.calibration])]
        except Exception as error:  # noqa: BLE001 - an InputError or OSError, shown to the user
            report_error(error, "export")
            return []
        self.export_status.setText(f"{len(table)} clusters written: " + ", ".join(str(p) for p in written))
        return written
