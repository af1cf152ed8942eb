"""Simulate widget: CCD frames with exact truth, from the simulator's presets and main parameters."""

from __future__ import annotations

import dataclasses

from qtpy.QtWidgets import QLineEdit, QPushButton, QWidget

from ..simulate import MAX_SIDE, SIM_PRESETS, UNITS, SimConfig
from ._common import WorkerWidget, combo, dspin, form, report_error, spin
from ._layers import add_frame, labels_name, set_labels, unique_prefix_index
from .workers import SimulatedUpdate, simulate_worker

# (SimConfig field, label, widget factory) of the parameters shown; the rest come from the preset.
_INT_FIELDS = {"rows": "Rows", "cols": "Columns"}
_FLOAT_FIELDS = {
    "read_noise_e": ("Read noise (e⁻ rms)", 0.0, 100.0, 0.01, 3),
    "dark_current_e": ("Dark current (e⁻/pixel)", 0.0, 100.0, 0.01, 3),
    "gain_adu_per_e": ("Gain (ADU/e⁻)", 0.001, 1e4, 0.1, 3),
    "pedestal_adu": ("Pedestal (ADU)", -1e6, 1e6, 10.0, 1),
    "cluster_rate": ("Clusters per 512²", 0.0, 1e5, 10.0, 1),
    "muon_rate": ("Muons per 512²", 0.0, 1e4, 0.5, 2),
    "electron_track_rate": ("Electron tracks per 512²", 0.0, 1e4, 0.5, 2),
    "amp_glow_e": ("Amplifier glow (e⁻)", 0.0, 1e5, 1.0, 2),
    "glow_band_probability": ("Glowing band probability", 0.0, 1.0, 0.05, 2),
}


class SimulateWidget(WorkerWidget):
    """Presets and the main physical parameters; adds frames ``<prefix> i`` and ``<prefix> i truth``."""

    def __init__(self, napari_viewer, parent=None) -> None:
        super().__init__(napari_viewer, parent)
        inputs = self._inputs_section()
        self.run_button = QPushButton("Simulate")
        self.run_button.clicked.connect(self.run)
        self.set_sections(inputs, form([self.run_buttons(self.run_button), self.progress_bar, self.status]))
        self.busy_widgets = [self.run_button, inputs]
        self.preset.currentTextChanged.connect(self.load_preset)
        self.units.currentTextChanged.connect(self._units_changed)
        self.load_preset(self.preset.currentText())

    def _inputs_section(self) -> QWidget:
        """Preset, size, units, the physics, number of frames, seed and layer name."""
        self.preset = combo(list(SIM_PRESETS), "conventional", "starting point: every parameter below comes from it")
        self.units = combo(list(UNITS), "e", "pixel values in electrons, or in ADU (pedestal + gain · e⁻)")
        self.ints = {name: spin(512, 16, MAX_SIDE, step=64) for name in _INT_FIELDS}
        self.floats = {
            name: dspin(0.0, low, high, step=step, decimals=decimals)
            for name, (_, low, high, step, decimals) in _FLOAT_FIELDS.items()
        }
        self.n_frames = spin(1, 1, 1000, "number of frames to simulate")
        self.seed = spin(0, 0, 2**31 - 1, "frame i uses the same seed as `ccdseg simulate --seed S` frame i")
        self.prefix = QLineEdit("sim")
        self.prefix.setToolTip("layers are named '<prefix> 0', '<prefix> 0 truth', ...")
        physics = form([(label, self.floats[name]) for name, (label, *_rest) in _FLOAT_FIELDS.items()], "Physics")
        sizes = [(label, self.ints[name]) for name, label in _INT_FIELDS.items()]
        return form(
            [("Preset", self.preset), *sizes, ("Units", self.units), physics, ("Frames", self.n_frames),
             ("Seed", self.seed), ("Layer name", self.prefix)]
        )

    # ------------------------------------------------------------ parameters

    def load_preset(self, name: str) -> None:
        """Fill every field from a preset."""
        config = SIM_PRESETS[name]
        for field, box in self.ints.items():
            box.setValue(getattr(config, field))
        for field, box in self.floats.items():
            box.setValue(getattr(config, field))
        self.units.setCurrentText(config.units)
        self._units_changed(config.units)

    def _units_changed(self, units: str) -> None:
        for field in ("gain_adu_per_e", "pedestal_adu"):
            self.floats[field].setEnabled(units == "adu")

    def config(self) -> SimConfig:
        """The preset with the fields' values; raises InputError on a bad combination."""
        values = {field: box.value() for field, box in self.ints.items()}
        values.update({field: box.value() for field, box in self.floats.items()})
        values["units"] = self.units.currentText()
        return dataclasses.replace(SIM_PRESETS[self.preset.currentText()], **values)

    # ------------------------------------------------------------ run

    def run(self) -> None:
        """Simulate the frames in a worker; each frame appears as soon as it is done."""
        if self.busy:
            return
        try:
            config = self.config()
        except Exception as error:  # noqa: BLE001 - InputError from validation, shown to the user
            report_error(error, "simulation")
            return
        prefix = self.prefix.text().strip() or "sim"
        n = self.n_frames.value()
        start = unique_prefix_index(self.viewer, prefix, n)
        names = [f"{prefix} {start + i}" for i in range(n)]
        self.status.setText(f"simulating {n} frame(s) of {config.rows} × {config.total_cols} …")
        worker = simulate_worker(config, names, self.seed.value(), self.stop_event)
        self.start_worker(worker, "simulation", on_yield=self._add, on_done=self._done, total=n)

    def _add(self, update: SimulatedUpdate) -> None:
        frame = update.frame
        add_frame(self.viewer, update.name, frame.image, {"simulation": frame.metadata})
        set_labels(
            self.viewer,
            labels_name(update.name, "truth"),
            frame.labels,
            {"ccdseg_instances": frame.instances, "ccdseg_source": update.name},
        )
        n_clusters = len(frame.metadata.get("clusters", []))
        self.status.setText(f"{update.name}: {n_clusters} clusters ({update.index}/{update.n})")
        self.progress_bar.setValue(update.index)

    def _done(self) -> None:
        if self.stop_event.is_set():
            self.status.setText(self.status.text() + " — stopped")
