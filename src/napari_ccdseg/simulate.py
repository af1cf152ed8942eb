"""Physics-based CCD frame simulator with exact truth: image, class labels, cluster instances.

Real frames come without labels, so the network learns from simulated ones whose truth is known
pixel by pixel. The physics and every formula are in ``docs/simulation.md``; in short:

- events (point clusters from an energy spectrum, straight muons, curly electron tracks) become
  charge points (row, col, depth, electrons); every electron is then diffused by the DAMIC model
  σ_xy² = −A ln(1 − b z) and binned into pixels, all at once;
- defects (amplifier glow, a band of glowing columns, hot pixels, hot segments, hot columns) are
  expected-charge maps, drawn with Poisson statistics;
- dark current is Poisson, optionally rising linearly along the readout (rows, columns), read
  noise Gaussian; prescan/overscan columns and overscan rows get noise only; an optional full
  well clips each pixel's charge;
- readout realism (all off by default): serial charge-transfer inefficiency trails every event
  electron towards later-read columns, serial-register hits make horizontal trails, few-electron
  hits, MeV alphas spread into round "plasma" blobs, a slow per-row pedestal drift, glitch pixels
  of 10⁶–10⁷ ADU, quantisation of the output;
  :func:`simulate_ccd` reads several amplifiers (own pedestal, gain, noise; some dead);
- truth: cluster where a pixel collected ≥ ``cluster_label_min_e`` electrons from events, hot
  pixel / glowing where the defect's expected charge reaches ``defect_label_level_e``; on overlap
  cluster > hot pixel > glowing > background; a glitch pixel is hot pixel whatever it held.

Coordinates: row 0 is the row next to the serial register and column 0 of the active area the
column next to the amplifier (readout corner), read first. Image columns are
[prescan | active | overscan], image rows [active | overscan rows].
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, atomic_write_text, jsonable
from .classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from .errors import InputError

E_PAIR_EV = 3.77
"""Mean energy per electron-hole pair in silicon (eV)."""
FANO = 0.128
"""Fano factor of silicon: variance of the pair count = FANO · mean."""
MAX_SIDE = 6144
"""Largest rows / cols accepted: a full DAMIC-M-size CCD."""
REFERENCE_SIDE = 512
"""Event rates and defect counts are given per 512 × 512 active pixels (hot columns per 512 columns)."""
GLOW_CUTOFF_E = 1e-3
"""Amplifier glow below this expected charge (e⁻/pixel) is dropped: it would never show."""
SILICON_DENSITY_G_CM3 = 2.329
ELECTRON_DEDX_EXPONENT = 0.375
"""dE/dx ∝ (residual range)^-0.375 along an electron track (R ∝ E^1.6), so tracks end in a blob."""
MIN_MUON_COS = 0.1
"""Muons steeper than 84° from the vertical are not drawn: their tracks would cross many frames."""

UNITS = ("e", "adu")
SPECTRA = ("log-uniform", "uniform")
GLOW_BAND_POSITIONS = ("left", "random")
FORMATS = ("npy", "fits")
KINDS = ("point", "muon", "electron", "trail", "few-electron", "alpha")
ALPHA_RANGE_5P5_MEV_UM = 28.0
"""CSDA range of a 5.5 MeV alpha in silicon (µm, ASTAR); other energies scale as E^1.6."""
ALPHA_RANGE_EXPONENT = 1.6


@dataclass
class SimConfig:
    """Every physical parameter of a simulated frame; see docs/simulation.md for each formula.

    Rates and defect counts are per 512 × 512 active pixels and scale with the active area, so a
    preset keeps its look at any frame size. Ranges (lo, hi) are drawn uniformly once per frame.
    """

    # geometry
    rows: int = 512
    cols: int = 512
    pixel_size_um: float = 15.0
    thickness_um: float = 675.0
    prescan_cols: int = 0
    overscan_cols: int = 0
    overscan_rows: int = 0
    # readout
    units: str = "e"
    pedestal_adu: float = 1000.0
    gain_adu_per_e: float = 2.0
    read_noise_e: float = 1.6
    dark_current_e: float = 0.05
    dark_current_row_ramp: float = 0.0
    """Readout-time ramp r (0–1): λ rises linearly from dark_current_e·(1 − r) at row 0 (read
    first) to dark_current_e·(1 + r) at the last row; the frame mean stays dark_current_e."""
    dark_current_col_ramp: float = 0.0
    """The same along the columns (column 0, next to the amplifier, read first); multiplies the row ramp."""
    full_well_e: float = 0.0
    """Pixel full well (e⁻; 0 = off): a pixel's collected charge is clipped there, the excess lost."""
    pedestal_drift_e: float = 0.0
    """rms of a slow random-walk drift of the pedestal along the rows (e⁻; × gain in ADU)."""
    cti_trail: float = 0.0
    """Serial CTI: chance an event electron is deferred by one more pixel (geometric trail)."""
    glitch_rate: float = 0.0
    glitch_adu: tuple[float, float] = (1e6, 1e7)
    quantisation_step: float = 0.0
    """Output rounded to multiples of this (output units; 0 = off): integer ADC codes, fpack."""
    # diffusion σ_xy² = −A ln(1 − b z), z = depth from the pixel (front) side
    diffusion_a_um2: float = 216.2
    diffusion_b_per_um: float = 8.86e-4
    # point clusters: count ~ Poisson(cluster_rate · area / 512²)
    cluster_rate: float = 100.0
    energy_spectrum: str = "log-uniform"
    energy_min_kev: float = 0.05
    energy_max_kev: float = 20.0
    line_energies_kev: tuple[float, ...] = ()
    line_fraction: float = 0.0
    # tracks
    muon_rate: float = 1.0
    muon_e_per_um: float = 80.0
    electron_track_rate: float = 3.0
    electron_energy_kev: tuple[float, float] = (50.0, 500.0)
    electron_curl: float = 1.0
    track_step_um: float = 2.0
    # serial-register hits: horizontal trails along one row
    serial_trail_rate: float = 0.0
    serial_trail_length: tuple[int, int] = (20, 200)
    serial_trail_e: tuple[float, float] = (1.0, 10.0)
    # few-electron hits (dark-matter-like): a few electrons diffused over a few pixels
    few_electron_rate: float = 0.0
    few_electron_e: tuple[int, int] = (2, 10)
    # alphas: MeV, short straight tracks from a surface, spread by the plasma effect into round blobs
    alpha_rate: float = 0.0
    alpha_energy_mev: tuple[float, float] = (3.0, 8.0)
    alpha_plasma_sigma_um: tuple[float, float] = (30.0, 75.0)
    """Extra lateral σ of an alpha's charge from the plasma effect (µm), uniform per alpha."""
    alpha_back_fraction: float = 0.5
    """Share of alphas entering from the back surface (z = thickness); the rest from the front."""
    # glowing
    amp_glow_e: float = 8.0
    amp_glow_length_px: float = 25.0
    glow_band_probability: float = 0.3
    glow_band_width: tuple[int, int] = (10, 40)
    glow_band_e: tuple[float, float] = (2.0, 6.0)
    glow_band_position: str = "left"
    # hot defects
    hot_pixels: tuple[float, float] = (20.0, 60.0)
    hot_pixel_e: tuple[float, float] = (5.0, 500.0)
    hot_segments: tuple[float, float] = (5.0, 20.0)
    hot_segment_length: tuple[int, int] = (2, 8)
    hot_segments_along_rows: float = 0.0
    """Share of hot segments along a row rather than a column. A defect makes a single hot pixel,
    or a column segment as rows are clocked past it; a flat run along a row is what a serial-
    register hit looks like. The original project's images (``seed-v1``) have them, half of them."""
    hot_columns: tuple[float, float] = (0.0, 2.0)
    hot_column_e: tuple[float, float] = (2.0, 10.0)
    # truth
    cluster_label_min_e: int = 1
    defect_label_sigma: float = 1.0
    defect_label_min_e: float = 0.5

    def __post_init__(self) -> None:
        self.validate()

    @property
    def defect_label_level_e(self) -> float:
        """Expected charge (e⁻/pixel) from which a glowing or hot defect is labelled."""
        return max(self.defect_label_sigma * self.read_noise_e, self.defect_label_min_e)

    @property
    def total_rows(self) -> int:
        """Height of the image: active + overscan rows."""
        return self.rows + self.overscan_rows

    @property
    def total_cols(self) -> int:
        """Width of the image: prescan + active + overscan columns."""
        return self.prescan_cols + self.cols + self.overscan_cols

    def validate(self) -> None:
        """Raise InputError naming the first bad parameter; the CLI mutates configs, so callers re-check."""
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimConfig:
        """Inverse of ``to_dict``; missing keys take their defaults, unknown keys are refused."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InputError(f"SimConfig: unknown parameter(s) {', '.join(unknown)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


@dataclass
class SimulatedFrame:
    """A simulated frame and its exact truth."""

    image: np.ndarray
    """float32, rows × (prescan + cols + overscan), in e⁻ or ADU per ``config.units``."""
    labels: np.ndarray
    """uint8 class map, same shape."""
    instances: np.ndarray
    """int32 cluster instances: 0 none, k the cluster with id k in ``metadata["clusters"]``."""
    metadata: dict = field(default_factory=dict)
    """JSON-serialisable: config, seed, clusters, defects."""


# ---------------------------------------------------------------- validation

_INT_RANGES = {
    "rows": (1, MAX_SIDE),
    "cols": (1, MAX_SIDE),
    "prescan_cols": (0, MAX_SIDE),
    "overscan_cols": (0, MAX_SIDE),
    "overscan_rows": (0, MAX_SIDE),
    "cluster_label_min_e": (1, 10**9),
}
_POSITIVE = (
    "pixel_size_um", "thickness_um", "gain_adu_per_e", "energy_min_kev", "track_step_um",
    "amp_glow_length_px", "defect_label_min_e",
)
_NON_NEGATIVE = (
    "read_noise_e", "dark_current_e", "diffusion_a_um2", "diffusion_b_per_um", "cluster_rate",
    "muon_rate", "muon_e_per_um", "electron_track_rate", "electron_curl", "amp_glow_e",
    "defect_label_sigma", "pedestal_drift_e", "glitch_rate", "quantisation_step",
    "serial_trail_rate", "few_electron_rate", "full_well_e", "alpha_rate",
)
_FRACTIONS = (
    "line_fraction", "glow_band_probability", "cti_trail", "dark_current_row_ramp", "dark_current_col_ramp",
    "alpha_back_fraction", "hot_segments_along_rows",
)
_RANGE_FIELDS = {  # name: smallest allowed lo
    "electron_energy_kev": 1.0,
    "glow_band_width": 1,
    "glow_band_e": 0.0,
    "hot_pixels": 0.0,
    "hot_pixel_e": 0.0,
    "hot_segments": 0.0,
    "hot_segment_length": 1,
    "hot_columns": 0.0,
    "hot_column_e": 0.0,
    "glitch_adu": 0.0,
    "serial_trail_length": 1,
    "serial_trail_e": 0.0,
    "few_electron_e": 1,
    "alpha_energy_mev": 0.1,
    "alpha_plasma_sigma_um": 0.0,
}
_CHOICES = {"units": UNITS, "energy_spectrum": SPECTRA, "glow_band_position": GLOW_BAND_POSITIONS}


def _fail(message: str, where: str = "SimConfig") -> None:
    raise InputError(f"{where}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _validate(cfg: SimConfig) -> None:
    """All checks in one place, each message naming the parameter, the rule and the value."""
    for name, (lo, hi) in _INT_RANGES.items():
        value = getattr(cfg, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not lo <= value <= hi:
            _fail(f"{name} must be an integer from {lo} to {hi}, got {value!r}")
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            _fail(f"{name} must be one of {', '.join(map(repr, choices))}, got {getattr(cfg, name)!r}")
    for name in _POSITIVE + _NON_NEGATIVE + _FRACTIONS + ("pedestal_adu", "energy_max_kev"):
        value = getattr(cfg, name)
        if not _is_number(value) or not math.isfinite(value):
            _fail(f"{name} must be a finite number, got {value!r}")
    for name in _POSITIVE:
        if getattr(cfg, name) <= 0:
            _fail(f"{name} must be > 0, got {getattr(cfg, name)!r}")
    for name in _NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            _fail(f"{name} must be >= 0, got {getattr(cfg, name)!r}")
    for name in _FRACTIONS:
        if not 0 <= getattr(cfg, name) <= 1:
            _fail(f"{name} must be between 0 and 1, got {getattr(cfg, name)!r}")
    for name, smallest in _RANGE_FIELDS.items():
        _check_range(name, getattr(cfg, name), smallest)
    _check_physics(cfg)


def _check_range(name: str, value: Any, smallest: float) -> None:
    ok = (
        isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_number(v) for v in value)
        and all(math.isfinite(v) for v in value) and smallest <= value[0] <= value[1]
    )
    if ok and isinstance(smallest, int):
        ok = all(float(v).is_integer() for v in value)
    if not ok:
        kind = "integers" if isinstance(smallest, int) else "numbers"
        _fail(f"{name} must be a (lo, hi) pair of {kind} with {smallest} <= lo <= hi, got {value!r}")


def _check_physics(cfg: SimConfig) -> None:
    if cfg.cti_trail >= 1:
        _fail(f"cti_trail must be below 1 (every electron would trail forever), got {cfg.cti_trail}")
    if cfg.energy_max_kev < cfg.energy_min_kev:
        _fail(f"energy_max_kev ({cfg.energy_max_kev}) is below energy_min_kev ({cfg.energy_min_kev})")
    if cfg.diffusion_b_per_um * cfg.thickness_um >= 1:
        _fail(
            f"diffusion_b_per_um · thickness_um must be < 1 (σ² = −A ln(1 − b z)), got "
            f"{cfg.diffusion_b_per_um} · {cfg.thickness_um}"
        )
    lines = cfg.line_energies_kev
    if not isinstance(lines, (tuple, list)) or not all(_is_number(e) and e > 0 for e in lines):
        _fail(f"line_energies_kev must be a list of energies > 0 keV, got {lines!r}")
    if cfg.line_fraction > 0 and not lines:
        _fail("line_fraction > 0 needs at least one entry in line_energies_kev")


# ---------------------------------------------------------------- physics helpers


def diffusion_sigma_um(depth_um: np.ndarray, a_um2: float = 216.2, b_per_um: float = 8.86e-4) -> np.ndarray:
    """Lateral diffusion σ_xy (µm) of charge made at depth z from the pixel side (DAMIC model)."""
    z = np.asarray(depth_um, dtype=np.float64)
    return np.sqrt(np.maximum(-a_um2 * np.log1p(-b_per_um * z), 0.0))


def electron_range_um(energy_kev: np.ndarray) -> np.ndarray:
    """CSDA range of an electron in silicon (Katz–Penfold, valid 10 keV–2.5 MeV), in µm."""
    e_mev = np.asarray(energy_kev, dtype=np.float64) / 1e3
    range_mg_cm2 = 412.0 * e_mev ** (1.265 - 0.0954 * np.log(e_mev))
    return range_mg_cm2 / (SILICON_DENSITY_G_CM3 * 1e3) * 1e4


def _area_scale(cfg: SimConfig) -> float:
    return cfg.rows * cfg.cols / REFERENCE_SIDE**2


def _count(rng: np.random.Generator, mean_range: tuple[float, float], scale: float) -> int:
    """Poisson count around a mean drawn from (lo, hi) per 512², scaled to this frame."""
    return int(rng.poisson(rng.uniform(*mean_range) * scale))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, … within each segment of the given lengths, concatenated."""
    starts = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) - np.repeat(starts, counts)


def _segmented_cumsum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each segment: one walk per track without a Python loop."""
    total = np.cumsum(values)
    before = np.concatenate(([0.0], total))[np.cumsum(counts) - counts]
    return total - np.repeat(before, counts)


# ---------------------------------------------------------------- events → charge points


@dataclass
class _Deposits:
    """Charge points in active-area pixel coordinates; ``event`` indexes the event (cluster)."""

    row: np.ndarray
    col: np.ndarray
    depth_um: np.ndarray
    electrons: np.ndarray
    event: np.ndarray
    plasma_um: np.ndarray | None = None
    """Extra lateral σ (µm) per point on top of diffusion (alphas' plasma effect); None = none."""


def _draw_energies(cfg: SimConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """Continuum (log-uniform or uniform) plus optional mono-energetic lines, in keV."""
    if cfg.energy_spectrum == "log-uniform":
        energy = _log_uniform(rng, cfg.energy_min_kev, cfg.energy_max_kev, n)
    else:
        energy = rng.uniform(cfg.energy_min_kev, cfg.energy_max_kev, n)
    if cfg.line_fraction > 0:
        in_line = rng.random(n) < cfg.line_fraction
        energy[in_line] = rng.choice(np.asarray(cfg.line_energies_kev, float), int(in_line.sum()))
    return energy


def _point_clusters(cfg: SimConfig, rng: np.random.Generator) -> tuple[_Deposits, np.ndarray]:
    """Diffusion-limited clusters: one charge point each, Fano-distributed pair count."""
    n = int(rng.poisson(cfg.cluster_rate * _area_scale(cfg)))
    energy = _draw_energies(cfg, rng, n)
    mean = energy * 1e3 / E_PAIR_EV
    electrons = np.maximum(np.rint(rng.normal(mean, np.sqrt(FANO * mean))), 0).astype(np.int64)
    return _random_points(cfg, rng, electrons), energy


def _random_points(cfg: SimConfig, rng: np.random.Generator, electrons: np.ndarray) -> _Deposits:
    """One charge point per event, uniform over the active area and the thickness."""
    n = len(electrons)
    return _Deposits(
        row=rng.uniform(0, cfg.rows, n),
        col=rng.uniform(0, cfg.cols, n),
        depth_um=rng.uniform(0, cfg.thickness_um, n),
        electrons=electrons,
        event=np.arange(n),
    )


def _muons(cfg: SimConfig, rng: np.random.Generator) -> tuple[_Deposits, np.ndarray]:
    """Straight tracks through the whole thickness; zenith angle from the cos²θ flux on a flat sensor."""
    n = int(rng.poisson(cfg.muon_rate * _area_scale(cfg)))
    cos_t = rng.uniform(MIN_MUON_COS**4, 1.0, n) ** 0.25  # p(cos θ) ∝ cos³θ
    phi = rng.uniform(0, 2 * np.pi, n)
    centre_row, centre_col = rng.uniform(0, cfg.rows, n), rng.uniform(0, cfg.cols, n)
    path_um = cfg.thickness_um / cos_t
    steps = np.ceil(path_um / cfg.track_step_um).astype(np.int64)
    event = np.repeat(np.arange(n), steps)
    step_um = (path_um / steps)[event]
    s = (_ranks(steps) + 0.5) * step_um
    sin_t = np.sqrt(1 - cos_t**2)
    lateral_px = (s * sin_t[event] - 0.5 * path_um[event] * sin_t[event]) / cfg.pixel_size_um
    electrons = rng.poisson(cfg.muon_e_per_um * step_um)
    deposits = _Deposits(
        row=centre_row[event] + lateral_px * np.sin(phi)[event],
        col=centre_col[event] + lateral_px * np.cos(phi)[event],
        depth_um=s * cos_t[event],
        electrons=electrons,
        event=event,
    )
    return deposits, np.bincount(event, electrons, minlength=n) * E_PAIR_EV / 1e3


def _electron_tracks(cfg: SimConfig, rng: np.random.Generator) -> tuple[_Deposits, np.ndarray]:
    """Curly tracks: a 3-D random walk whose direction wanders more as the electron slows down.

    Each step turns by Gaussian angles of rms curl · sqrt(step / residual range); the track stops
    where it first leaves the silicon. Charge per step ∝ residual^-0.375 (a blob at the end).
    """
    n = int(rng.poisson(cfg.electron_track_rate * _area_scale(cfg)))
    energy = _log_uniform(rng, *cfg.electron_energy_kev, n)
    range_um = electron_range_um(energy)
    steps = np.maximum(np.ceil(range_um / cfg.track_step_um), 1).astype(np.int64)
    event = np.repeat(np.arange(n), steps)
    step_um = (range_um / steps)[event]
    residual = range_um[event] - (_ranks(steps) + 0.5) * step_um
    turn = cfg.electron_curl * np.sqrt(step_um / residual)
    theta = np.arccos(rng.uniform(-1, 1, n))[event] + _segmented_cumsum(rng.normal(0, turn), steps)
    phi = rng.uniform(0, 2 * np.pi, n)[event] + _segmented_cumsum(rng.normal(0, turn), steps)
    start = np.stack([rng.uniform(0, side, n) for side in (cfg.rows, cfg.cols, cfg.thickness_um)])
    moves = step_um * np.stack([np.sin(theta) * np.sin(phi), np.sin(theta) * np.cos(phi), np.cos(theta)])
    pos = np.stack([_segmented_cumsum(m, steps) for m in moves]) - 0.5 * moves
    depth = start[2][event] + pos[2]
    escaped = _segmented_cumsum(((depth < 0) | (depth > cfg.thickness_um)).astype(float), steps) > 0
    weight = residual**-ELECTRON_DEDX_EXPONENT
    mean = (energy * 1e3 / E_PAIR_EV)[event] * weight / np.bincount(event, weight, minlength=n)[event]
    electrons = np.where(escaped, 0, rng.poisson(mean))
    deposits = _Deposits(
        row=start[0][event] + pos[0] / cfg.pixel_size_um,
        col=start[1][event] + pos[1] / cfg.pixel_size_um,
        depth_um=np.clip(depth, 0, cfg.thickness_um),
        electrons=electrons,
        event=event,
    )
    return deposits, np.bincount(event, electrons, minlength=n) * E_PAIR_EV / 1e3


def _serial_trails(cfg: SimConfig, rng: np.random.Generator) -> tuple[_Deposits, np.ndarray]:
    """Hits in the serial register: charge smeared along one row as it is clocked out.

    Drawn as charge at depth 0 (no diffusion) on consecutive pixels of a row, Poisson around a
    level per trail; pixels beyond the last column are lost.
    """
    n = int(rng.poisson(cfg.serial_trail_rate * _area_scale(cfg)))
    lo, hi = (int(v) for v in cfg.serial_trail_length)
    length = rng.integers(lo, hi + 1, n)
    row, start = rng.integers(0, cfg.rows, n), rng.integers(0, cfg.cols, n)
    level = rng.uniform(*cfg.serial_trail_e, n)
    event = np.repeat(np.arange(n), length)
    electrons = rng.poisson(level[event])
    deposits = _Deposits(
        row=row[event] + 0.5,
        col=start[event] + _ranks(length) + 0.5,
        depth_um=np.zeros(event.size),
        electrons=electrons,
        event=event,
    )
    return deposits, np.bincount(event, electrons, minlength=n) * E_PAIR_EV / 1e3


def _few_electron_hits(cfg: SimConfig, rng: np.random.Generator) -> tuple[_Deposits, np.ndarray]:
    """A few electrons at one point, diffused like any cluster: the hits a dark-matter search seeks."""
    n = int(rng.poisson(cfg.few_electron_rate * _area_scale(cfg)))
    lo, hi = (int(v) for v in cfg.few_electron_e)
    electrons = rng.integers(lo, hi + 1, n)
    return _random_points(cfg, rng, electrons), electrons * E_PAIR_EV / 1e3


def _alphas(cfg: SimConfig, rng: np.random.Generator) -> tuple[_Deposits, np.ndarray]:
    """Alphas from surface contamination: a short straight track from the back or front surface,
    charge rising towards its end (Bragg), every electron spread by the plasma effect on top of
    diffusion, so an alpha is a round blob tens of pixels across."""
    n = int(rng.poisson(cfg.alpha_rate * _area_scale(cfg)))
    energy = rng.uniform(*cfg.alpha_energy_mev, n) * 1e3
    range_um = ALPHA_RANGE_5P5_MEV_UM * (energy / 5500.0) ** ALPHA_RANGE_EXPONENT
    cos_t = 1.0 - rng.random(n)  # isotropic emission into the silicon: cos θ uniform in (0, 1]
    phi = rng.uniform(0, 2 * np.pi, n)
    from_back = rng.random(n) < cfg.alpha_back_fraction
    plasma_um = rng.uniform(*cfg.alpha_plasma_sigma_um, n)
    start_row, start_col = rng.uniform(0, cfg.rows, n), rng.uniform(0, cfg.cols, n)
    steps = np.maximum(np.ceil(range_um / cfg.track_step_um), 1).astype(np.int64)
    event = np.repeat(np.arange(n), steps)
    step_um = (range_um / steps)[event]
    s = (_ranks(steps) + 0.5) * step_um
    weight = (range_um[event] - s) ** -ELECTRON_DEDX_EXPONENT
    mean = (energy * 1e3 / E_PAIR_EV)[event] * weight / np.bincount(event, weight, minlength=n)[event]
    lateral_px = s * np.sqrt(1 - cos_t**2)[event] / cfg.pixel_size_um
    below_surface = s * cos_t[event]
    deposits = _Deposits(
        row=start_row[event] + lateral_px * np.sin(phi)[event],
        col=start_col[event] + lateral_px * np.cos(phi)[event],
        depth_um=np.where(from_back[event], cfg.thickness_um - below_surface, below_surface),
        electrons=rng.poisson(mean),
        event=event,
        plasma_um=plasma_um[event],
    )
    return deposits, energy


_OPTIONAL_EVENTS = {"trail": "serial_trail_rate", "few-electron": "few_electron_rate", "alpha": "alpha_rate"}
"""Kinds drawn only when their rate is set, so frames made without them keep their random stream."""


def _all_events(cfg: SimConfig, rng: np.random.Generator) -> tuple[_Deposits, list[str], np.ndarray]:
    """Every event of the frame as one set of charge points, numbered in the order of ``KINDS``."""
    parts, kinds, energies = [], [], []
    offset = 0
    makers = (_point_clusters, _muons, _electron_tracks, _serial_trails, _few_electron_hits, _alphas)
    for kind, make in zip(KINDS, makers):
        if kind in _OPTIONAL_EVENTS and getattr(cfg, _OPTIONAL_EVENTS[kind]) == 0:
            continue
        deposits, energy = make(cfg, rng)
        deposits.event = deposits.event + offset
        parts.append(deposits)
        kinds += [kind] * len(energy)
        energies.append(energy)
        offset += len(energy)
    names = [f.name for f in dataclasses.fields(_Deposits) if f.name != "plasma_um"]
    merged = _Deposits(*(np.concatenate([getattr(p, name) for p in parts]) for name in names))
    if any(p.plasma_um is not None for p in parts):
        merged.plasma_um = np.concatenate([np.zeros(p.row.size) if p.plasma_um is None else p.plasma_um for p in parts])
    return merged, kinds, np.concatenate(energies)


# ---------------------------------------------------------------- charge collection


@dataclass
class _Collected:
    charge: np.ndarray  # int64 electrons per active pixel from events
    owner: np.ndarray  # int32 event index + 1 of the dominant event per pixel, 0 none
    per_point: np.ndarray  # electrons collected in the frame from each charge point


def _collect(cfg: SimConfig, deposits: _Deposits, n_events: int, rng: np.random.Generator) -> _Collected:
    """Diffuse every electron by its point's σ_xy, trail it by serial CTI, bin it; electrons off the
    frame are lost. CTI acts on event charge only (defects and dark current are far dimmer)."""
    rows, cols = cfg.rows, cfg.cols
    sigma_um = diffusion_sigma_um(deposits.depth_um, cfg.diffusion_a_um2, cfg.diffusion_b_per_um)
    if deposits.plasma_um is not None:  # only where set, so other points keep their σ bit for bit
        plasma = deposits.plasma_um
        sigma_um = np.where(plasma > 0, np.hypot(sigma_um, plasma), sigma_um)
    sigma_px = sigma_um / cfg.pixel_size_um
    point = np.repeat(np.arange(len(deposits.electrons), dtype=np.int32), deposits.electrons)
    spread = sigma_px.astype(np.float32)[point]
    r = deposits.row.astype(np.float32)[point] + spread * rng.standard_normal(point.size, dtype=np.float32)
    c = deposits.col.astype(np.float32)[point] + spread * rng.standard_normal(point.size, dtype=np.float32)
    del spread
    if cfg.cti_trail > 0:  # deferred by k pixels with chance (1 − p)·p^k, towards later-read columns
        c = np.floor(c) + (rng.geometric(1 - cfg.cti_trail, c.size) - 1).astype(np.float32)
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    point = point[inside]
    pix = r[inside].astype(np.int64) * cols + c[inside].astype(np.int64)
    del r, c
    event = deposits.event.astype(np.int32)[point]
    charge = np.bincount(pix, minlength=rows * cols)
    owner = _dominant_event(pix, event, rows * cols, n_events)
    per_point = np.bincount(point, minlength=len(deposits.electrons))
    return _Collected(charge.reshape(rows, cols), owner.reshape(rows, cols), per_point)


def _dominant_event(pix: np.ndarray, event: np.ndarray, n_pix: int, n_events: int) -> np.ndarray:
    """Per pixel, 1 + the event that left the most electrons there (ties: the later event), 0 if none.

    Min/max per pixel find the rare shared pixels cheaply; only their electrons are counted exactly.
    """
    high = np.full(n_pix, -1, dtype=np.int32)
    np.maximum.at(high, pix, event)
    low = np.full(n_pix, np.iinfo(np.int32).max, dtype=np.int32)
    np.minimum.at(low, pix, event)
    shared = np.flatnonzero((high >= 0) & (low < high))
    if shared.size:
        in_shared = np.zeros(n_pix, dtype=bool)
        in_shared[shared] = True
        sel = in_shared[pix]
        keys, counts = np.unique(pix[sel] * n_events + event[sel], return_counts=True)
        key_pix, key_event = np.divmod(keys, n_events)
        order = np.lexsort((counts, key_pix))
        last = np.r_[key_pix[order][1:] != key_pix[order][:-1], True]
        high[key_pix[order][last]] = key_event[order][last]
    return high + 1


# ---------------------------------------------------------------- defects


@dataclass
class _Defects:
    glow: np.ndarray  # expected e⁻/pixel from glowing
    hot: np.ndarray  # expected e⁻/pixel from hot pixels, segments and columns
    info: dict


def _defects(cfg: SimConfig, rng: np.random.Generator) -> _Defects:
    """Expected-charge maps of every defect; drawn later with Poisson statistics."""
    glow = np.zeros((cfg.rows, cfg.cols), dtype=np.float32)
    hot = np.zeros_like(glow)
    _add_amp_glow(glow, cfg)
    band = _add_glow_band(glow, cfg, rng)
    info = {
        "glow_band": band,
        "hot_pixels": _add_hot_pixels(hot, cfg, rng),
        "hot_segments": _add_hot_segments(hot, cfg, rng),
        "hot_columns": _add_hot_columns(hot, cfg, rng),
    }
    return _Defects(glow, hot, info)


def _add_amp_glow(glow: np.ndarray, cfg: SimConfig) -> None:
    """Amplifier glow: amp_glow_e · exp(−d / length), d the distance from the readout corner (0, 0)."""
    if cfg.amp_glow_e <= GLOW_CUTOFF_E:
        return
    reach = int(math.ceil(cfg.amp_glow_length_px * math.log(cfg.amp_glow_e / GLOW_CUTOFF_E)))
    rr, cc = np.ogrid[: min(reach, cfg.rows), : min(reach, cfg.cols)]
    distance = np.hypot(rr + 0.5, cc + 0.5)
    glow[: rr.shape[0], : cc.shape[1]] += cfg.amp_glow_e * np.exp(-distance / cfg.amp_glow_length_px)


def _add_glow_band(glow: np.ndarray, cfg: SimConfig, rng: np.random.Generator) -> list[int] | None:
    """With glow_band_probability, a band of glowing columns (each column its own level ±20 %)."""
    present = rng.random() < cfg.glow_band_probability
    # Drawn even when absent, so a seed keeps its hot pixels, segments and columns either way.
    lo, hi = (int(v) for v in cfg.glow_band_width)
    width = min(int(rng.integers(lo, hi + 1)), cfg.cols)
    start = 0 if cfg.glow_band_position == "left" else int(rng.integers(0, cfg.cols - width + 1))
    level = rng.uniform(*cfg.glow_band_e) * rng.uniform(0.8, 1.2, width)
    if not present:
        return None
    glow[:, start : start + width] += level.astype(np.float32)
    return [start, start + width]


def _add_hot_pixels(hot: np.ndarray, cfg: SimConfig, rng: np.random.Generator) -> int:
    """Single hot pixels, expected charge log-uniform in hot_pixel_e."""
    n = _count(rng, cfg.hot_pixels, _area_scale(cfg))
    where = (rng.integers(0, cfg.rows, n), rng.integers(0, cfg.cols, n))
    np.add.at(hot, where, _hot_levels(cfg, rng, n))
    return n


def _add_hot_segments(hot: np.ndarray, cfg: SimConfig, rng: np.random.Generator) -> int:
    """Short runs of hot pixels along a column (or, a share ``hot_segments_along_rows``, a row), one
    level per segment."""
    n = _count(rng, cfg.hot_segments, _area_scale(cfg))
    lo, hi = (int(v) for v in cfg.hot_segment_length)
    length = rng.integers(lo, hi + 1, n)
    vertical = rng.random(n) < 1.0 - cfg.hot_segments_along_rows
    row0, col0 = rng.integers(0, cfg.rows, n), rng.integers(0, cfg.cols, n)
    level = _hot_levels(cfg, rng, n)
    seg = np.repeat(np.arange(n), length)
    step = _ranks(length)
    rows = row0[seg] + step * vertical[seg]
    cols = col0[seg] + step * ~vertical[seg]
    ok = (rows < cfg.rows) & (cols < cfg.cols)
    np.add.at(hot, (rows[ok], cols[ok]), level[seg][ok])
    return n


def _add_hot_columns(hot: np.ndarray, cfg: SimConfig, rng: np.random.Generator) -> list[int]:
    """Fully hot columns (count per 512 columns), a uniform level per column."""
    n = _count(rng, cfg.hot_columns, cfg.cols / REFERENCE_SIDE)
    columns = rng.integers(0, cfg.cols, n)
    np.add.at(hot.T, columns, rng.uniform(*cfg.hot_column_e, n).astype(np.float32)[:, None])
    return sorted(int(c) for c in columns)


def _hot_levels(cfg: SimConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    return _levels(rng, cfg.hot_pixel_e, n).astype(np.float32)


def _levels(rng: np.random.Generator, bounds: tuple[float, float], n: int) -> np.ndarray:
    """Log-uniform in (lo, hi), spanning decades alike; uniform when lo is 0."""
    lo, hi = bounds
    return _log_uniform(rng, lo, hi, n) if lo > 0 else rng.uniform(lo, hi, n)


# ---------------------------------------------------------------- frame


def _ramp(n: int, ramp: float) -> np.ndarray:
    """Weights 1 + ramp·u at pixel centres, u from −1 (read first) to +1 (read last); mean exactly 1."""
    return 1.0 + ramp * (2.0 * (np.arange(n) + 0.5) / n - 1.0)


def dark_current_per_row(cfg: SimConfig) -> np.ndarray:
    """True mean dark current (e⁻/pixel) of each active row, averaged over its columns."""
    return cfg.dark_current_e * _ramp(cfg.rows, cfg.dark_current_row_ramp)


def dark_current_map(cfg: SimConfig) -> np.ndarray:
    """True mean dark current (e⁻/pixel) of every active pixel: λ·w_row(row)·w_col(col)."""
    return np.outer(dark_current_per_row(cfg), _ramp(cfg.cols, cfg.dark_current_col_ramp))


def _dark_current(cfg: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """Poisson dark current: a Poisson number of electrons at random pixels (same law, far faster),
    uniform without a ramp, else row and column drawn from the ramps' linear densities."""
    n_pix = cfg.rows * cfg.cols
    count = int(rng.poisson(cfg.dark_current_e * n_pix))
    if cfg.dark_current_row_ramp == 0 and cfg.dark_current_col_ramp == 0:
        where = rng.integers(0, n_pix, count)
    else:
        row = _draw_index(rng, _ramp(cfg.rows, cfg.dark_current_row_ramp), count)
        where = row * cfg.cols + _draw_index(rng, _ramp(cfg.cols, cfg.dark_current_col_ramp), count)
    return np.bincount(where, minlength=n_pix).reshape(cfg.rows, cfg.cols)


def _draw_index(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """n indices drawn with probability ∝ weights (inverse of the cumulative sum)."""
    cdf = np.cumsum(weights)
    index = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    return np.minimum(index, weights.size - 1)


def _saturate(cfg: SimConfig, active: np.ndarray) -> np.ndarray:
    """Clip every pixel's charge at the full well (in place); the map of pixels that reached it."""
    if cfg.full_well_e <= 0:
        return np.zeros(active.shape, dtype=bool)
    full = int(cfg.full_well_e)
    np.minimum(active, full, out=active)
    return active >= full


def _truth(cfg: SimConfig, collected: _Collected, defects: _Defects) -> np.ndarray:
    """Class map of the active area; later assignments win: cluster > hot pixel > glowing."""
    level = cfg.defect_label_level_e
    labels = np.full((cfg.rows, cfg.cols), BACKGROUND, dtype=np.uint8)
    labels[defects.glow >= level] = GLOWING
    labels[defects.hot >= level] = HOT_PIXEL
    labels[collected.charge >= cfg.cluster_label_min_e] = CLUSTER
    return labels


def _glitches(cfg: SimConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices into the active area and values (output units) of glitch pixels.

    A glitch is an electronics spike, not charge: the pixel reads its value whatever it held.
    """
    if cfg.glitch_rate == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    n = int(rng.poisson(cfg.glitch_rate * _area_scale(cfg)))
    where = rng.integers(0, cfg.rows * cfg.cols, n)
    scale = 1.0 if cfg.units == "adu" else 1.0 / cfg.gain_adu_per_e
    values = _levels(rng, cfg.glitch_adu, n) * scale
    if cfg.quantisation_step > 0:  # the ADC digitises a spike like any other value
        values = np.round(values / cfg.quantisation_step) * cfg.quantisation_step
    return where, values.astype(np.float32)


def _pedestal_drift(cfg: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-row pedestal offsets (e⁻): a random walk along the readout, mean 0, rms pedestal_drift_e."""
    walk = np.cumsum(rng.standard_normal(cfg.total_rows))
    walk -= walk.mean()
    spread = walk.std()
    return (walk * (cfg.pedestal_drift_e / spread if spread > 0 else 0.0)).astype(np.float32)


def _readout(cfg: SimConfig, active_e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Place the active area among prescan, overscan columns and overscan rows, add read noise and
    pedestal drift, convert to the output units, quantise."""
    image = _pad(cfg, active_e.astype(np.float32, copy=False))
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= np.float32(cfg.read_noise_e)
    image += noise
    del noise
    if cfg.pedestal_drift_e > 0:
        image += _pedestal_drift(cfg, rng)[:, None]
    if cfg.units == "adu":
        image *= np.float32(cfg.gain_adu_per_e)
        image += np.float32(cfg.pedestal_adu)
    if cfg.quantisation_step > 0:
        step = np.float32(cfg.quantisation_step)
        np.round(image / step, out=image)
        image *= step
    return image


def _pad(cfg: SimConfig, active: np.ndarray) -> np.ndarray:
    """Full-size array with zeros (background / no instance) in prescan, overscan and overscan rows."""
    full = np.zeros((cfg.total_rows, cfg.total_cols), dtype=active.dtype)
    full[: cfg.rows, cfg.prescan_cols : cfg.prescan_cols + cfg.cols] = active
    return full


def simulate_frame(config: SimConfig | None = None, seed: int = 0) -> SimulatedFrame:
    """Simulate one frame with exact truth; the same (config, seed) always gives the same frame."""
    cfg = config if config is not None else SimConfig()
    cfg.validate()
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"simulate_frame: seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    deposits, kinds, energies = _all_events(cfg, rng)
    collected = _collect(cfg, deposits, len(kinds), rng)
    defects = _defects(cfg, rng)
    expected = defects.glow + defects.hot
    active = collected.charge + _dark_current(cfg, rng)
    nz = np.flatnonzero(expected)
    active.flat[nz] += rng.poisson(expected.flat[nz])
    saturated = _saturate(cfg, active)
    labels = _truth(cfg, collected, defects)
    glitch_at, glitch_values = _glitches(cfg, rng)
    labels.flat[glitch_at] = HOT_PIXEL  # the pixel's charge is lost under the spike
    owner = np.where(labels == CLUSTER, collected.owner, 0)
    clusters, renumber = _cluster_table(cfg, deposits, collected, owner, saturated, kinds, energies)
    image = _readout(cfg, active, rng)
    glitch_rows, glitch_cols = np.divmod(glitch_at, cfg.cols)
    image[glitch_rows, glitch_cols + cfg.prescan_cols] = glitch_values
    metadata = {
        "config": cfg.to_dict(),
        "seed": int(seed),
        "shape": [cfg.total_rows, cfg.total_cols],
        "active_rows": [0, cfg.rows],
        "active_cols": [cfg.prescan_cols, cfg.prescan_cols + cfg.cols],
        "units": cfg.units,
        "read_noise_e": cfg.read_noise_e,
        "gain_adu_per_e": cfg.gain_adu_per_e,
        "pedestal_adu": cfg.pedestal_adu,
        "dark_current_e": cfg.dark_current_e,
        "dark_current_e_per_row": [round(float(v), 6) for v in dark_current_per_row(cfg)],
        "full_well_e": cfg.full_well_e,
        "saturated_pixels": int(saturated.sum()),
        "defect_label_level_e": cfg.defect_label_level_e,
        "clusters": clusters,
        "defects": {**_defect_info(cfg, defects.info), "glitches": int(glitch_at.size)},
    }
    return SimulatedFrame(
        image=image,
        labels=_pad(cfg, labels),
        instances=_pad(cfg, renumber[owner].astype(np.int32)),
        metadata=metadata,
    )


def _cluster_table(
    cfg: SimConfig,
    deposits: _Deposits,
    collected: _Collected,
    owner: np.ndarray,
    saturated: np.ndarray,
    kinds: list[str],
    energies: np.ndarray,
) -> tuple[list[dict], np.ndarray]:
    """Metadata of every event that put ≥ 1 e⁻ in the frame, ids 1..N, and the owner → id map.

    Centre and depth are the charge-weighted truth (before diffusion) of the collected electrons,
    in image pixel coordinates (pixel centres at integers, columns counted from the prescan).
    """
    n = len(kinds)
    w = collected.per_point.astype(np.float64)
    electrons = np.bincount(deposits.event, w, minlength=n)
    safe = np.maximum(electrons, 1)
    row = np.bincount(deposits.event, w * deposits.row, minlength=n) / safe - 0.5
    col = np.bincount(deposits.event, w * deposits.col, minlength=n) / safe - 0.5 + cfg.prescan_cols
    depth = np.bincount(deposits.event, w * deposits.depth_um, minlength=n) / safe
    pixels = np.bincount(owner.ravel(), minlength=n + 1)[1:]
    at_full_well = np.bincount(owner[saturated], minlength=n + 1)[1:]
    kept = np.flatnonzero(electrons > 0)
    renumber = np.zeros(n + 1, dtype=np.int32)
    renumber[kept + 1] = np.arange(1, kept.size + 1)
    table = [
        {
            "id": i + 1,
            "kind": kinds[k],
            "energy_kev": round(float(energies[k]), 4),
            "depth_um": round(float(depth[k]), 2),
            "row": round(float(row[k]), 2),
            "col": round(float(col[k]), 2),
            "electrons": int(electrons[k]),
            "pixels": int(pixels[k]),
            "saturated_pixels": int(at_full_well[k]),
        }
        for i, k in enumerate(kept)
    ]
    return table, renumber


def _defect_info(cfg: SimConfig, info: dict) -> dict:
    """Defect summary in image coordinates (columns counted from the prescan)."""
    shift = cfg.prescan_cols
    band = info["glow_band"]
    return {
        "glow_band_cols": None if band is None else [band[0] + shift, band[1] + shift],
        "hot_pixels": info["hot_pixels"],
        "hot_segments": info["hot_segments"],
        "hot_columns": [c + shift for c in info["hot_columns"]],
    }


# ---------------------------------------------------------------- presets and datasets

SIM_PRESETS: dict[str, SimConfig] = {
    "conventional": SimConfig(),
    "skipper": SimConfig(read_noise_e=0.16, dark_current_e=0.01),
    "seed-v1": SimConfig(
        rows=256,
        cols=256,
        glow_band_probability=0.6,
        glow_band_width=(40, 61),
        glow_band_position="left",
        hot_segments=(1600.0, 2000.0),  # per 512²: 400–500 in a 256 × 256 frame
        hot_segment_length=(2, 6),
        hot_segments_along_rows=0.5,
    ),
    # One amplifier of a many-sample skipper CCD in a module test, after baseline subtraction,
    # fpack-compressed: 320 × 640 pixels holding ~140 clusters (~100 points, ~30 few-electron hits,
    # tracks, trails; a real one holds ~130), pedestal −39 ADU drifting ~1 ADU along the rows, dark
    # current rising along the readout from 0.3 to 1.5 e⁻/pixel (resolved 0/1/2 e⁻ peaks), serial-
    # register trails of hundreds to thousands of e⁻ per pixel, a full well.
    "damic-m": SimConfig(
        rows=320, cols=640, prescan_cols=8, overscan_cols=64, overscan_rows=16,
        units="adu", pedestal_adu=-39.0, gain_adu_per_e=6.0, read_noise_e=0.16,
        dark_current_e=0.9, dark_current_row_ramp=2 / 3, full_well_e=20000.0,
        pedestal_drift_e=1 / 6, cti_trail=0.05,
        cluster_rate=130.0, few_electron_rate=40.0, serial_trail_rate=2.0,
        serial_trail_length=(15, 60), serial_trail_e=(200.0, 2000.0), glitch_rate=0.5,
        quantisation_step=0.25, amp_glow_e=2.0,
    ),
    # A raw single-sample frame: pedestal of tens of thousands ADU, ~90 ADU noise, integer ADC codes.
    "single-sample": SimConfig(
        prescan_cols=8, overscan_cols=64, overscan_rows=8, units="adu", pedestal_adu=25000.0,
        gain_adu_per_e=45.0, read_noise_e=2.0, pedestal_drift_e=0.05, cti_trail=0.02,
        serial_trail_rate=2.0, glitch_rate=0.5, quantisation_step=1.0,
    ),
}
"""Named configurations; copy with ``dataclasses.replace`` before changing one."""


@dataclass(frozen=True)
class AmplifierLayout:
    """Several amplifiers of one CCD, each read out as its own image (one FITS extension each).

    Each amplifier gets the config's pedestal, gain and read noise varied by the spreads below;
    ``dead`` amplifiers (0-based) have no CCD behind them and show only electronics noise.
    """

    amplifiers: int = 4
    pedestal_spread_adu: float = 100.0
    gain_spread: float = 0.05
    noise_spread: float = 0.1
    dead: tuple[int, ...] = ()
    dead_noise_adu: float = 3000.0

    def __post_init__(self) -> None:
        where = "AmplifierLayout"
        if not isinstance(self.amplifiers, (int, np.integer)) or not 1 <= self.amplifiers <= 64:
            _fail(f"amplifiers must be an integer from 1 to 64, got {self.amplifiers!r}", where)
        for name in ("pedestal_spread_adu", "dead_noise_adu"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                _fail(f"{name} must be a finite number >= 0, got {value!r}", where)
        for name in ("gain_spread", "noise_spread"):
            if not _is_number(getattr(self, name)) or not 0 <= getattr(self, name) < 1:
                _fail(f"{name} must be a fraction from 0 to below 1, got {getattr(self, name)!r}", where)
        bad = [d for d in self.dead if not isinstance(d, (int, np.integer)) or not 0 <= d < self.amplifiers]
        if bad:
            _fail(f"dead amplifiers must be indices from 0 to {self.amplifiers - 1}, got {bad}", where)


def _dead_config(cfg: SimConfig, noise_adu: float) -> SimConfig:
    """An amplifier reading nothing: no charge of any kind, only noise of ``noise_adu``."""
    return dataclasses.replace(
        cfg, read_noise_e=noise_adu / cfg.gain_adu_per_e, dark_current_e=0.0, cluster_rate=0.0,
        muon_rate=0.0, electron_track_rate=0.0, serial_trail_rate=0.0, few_electron_rate=0.0,
        amp_glow_e=0.0, glow_band_probability=0.0, hot_pixels=(0.0, 0.0), hot_segments=(0.0, 0.0),
        hot_columns=(0.0, 0.0), glitch_rate=0.0, pedestal_drift_e=0.0, alpha_rate=0.0,
    )


def amplifier_configs(config: SimConfig, layout: AmplifierLayout, seed: int) -> list[SimConfig]:
    """One config per amplifier: pedestal, gain and noise varied per the layout, dead ones silenced."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA4]))
    configs = []
    for amp in range(layout.amplifiers):
        varied = dataclasses.replace(
            config,
            pedestal_adu=config.pedestal_adu + rng.uniform(-1, 1) * layout.pedestal_spread_adu,
            gain_adu_per_e=config.gain_adu_per_e * (1 + rng.uniform(-1, 1) * layout.gain_spread),
            read_noise_e=config.read_noise_e * (1 + rng.uniform(-1, 1) * layout.noise_spread),
        )
        configs.append(_dead_config(varied, layout.dead_noise_adu) if amp in layout.dead else varied)
    return configs


def simulate_ccd(
    config: SimConfig | None = None, seed: int = 0, layout: AmplifierLayout | None = None
) -> list[SimulatedFrame]:
    """Every amplifier of one CCD readout, each its own frame with truth (``metadata["amplifier"]``)."""
    cfg = config if config is not None else SimConfig()
    layout = layout if layout is not None else AmplifierLayout()
    frames = []
    for amp, amp_cfg in enumerate(amplifier_configs(cfg, layout, seed)):
        frame = simulate_frame(amp_cfg, frame_seed(seed, amp))
        frame.metadata["amplifier"] = {"index": amp, "name": amplifier_name(amp), "dead": amp in layout.dead}
        frames.append(frame)
    return frames


def amplifier_name(index: int) -> str:
    """FITS EXTNAME of amplifier ``index`` (0-based): AMP1, AMP2, …"""
    return f"AMP{index + 1}"


def frame_seed(seed: int, index: int) -> int:
    """Seed of frame ``index`` in a dataset made with ``seed``: independent streams, never shifted copies."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def simulate_dataset(
    out_dir: str | Path,
    n: int,
    config: SimConfig | None = None,
    seed: int = 0,
    fmt: str = "npy",
    layout: AmplifierLayout | None = None,
) -> list[Path]:
    """Write n frames ``sim_000…`` with their truth; returns the frame paths.

    Per frame X: ``X_meta.json``, ``X_labels.png`` (uint8 class map), ``X_instances.npy`` and, last,
    the frame ``X.npy`` / ``X.fits``, each written atomically, so a frame on disk has its truth.
    With a ``layout`` each CCD readout has one image per amplifier: a multi-extension ``X.fits``
    (EXTNAME AMP1, AMP2, …) with truth ``X_AMP1_labels.png`` … beside it, or ``X_AMP1.npy`` ….
    """
    cfg = config if config is not None else SimConfig()
    cfg.validate()
    if fmt not in FORMATS:
        raise InputError(f"simulate_dataset: fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise InputError(f"simulate_dataset: n must be a non-negative integer, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"simulate_dataset: seed must be a non-negative integer, got {seed!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(n - 1)))
    paths: list[Path] = []
    for i in range(n):
        stem = f"sim_{i:0{digits}d}"
        if layout is None:
            paths.append(_write_frame(out, stem, simulate_frame(cfg, frame_seed(seed, i)), seed, i, fmt))
        else:
            paths += _write_ccd(out, stem, simulate_ccd(cfg, frame_seed(seed, i), layout), seed, i, fmt)
    return paths


def _write_truth(out: Path, stem: str, frame: SimulatedFrame) -> None:
    from . import io

    atomic_write_text(out / f"{stem}_meta.json", json.dumps(frame.metadata, indent=1))
    io.write_label_map(out / f"{stem}_labels.png", frame.labels)
    with atomic_path(out / f"{stem}_instances.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, frame.instances, allow_pickle=False)


def _fits_keywords(frame: SimulatedFrame) -> dict:
    meta = frame.metadata
    return {
        "BUNIT": "electron" if meta["units"] == "e" else "adu",
        "SIMSEED": meta["seed"],
        "RDNOISE": round(meta["read_noise_e"], 6),
        "PRESCAN": meta["config"]["prescan_cols"],
        "OVERSCAN": meta["config"]["overscan_cols"],
        "OVERSCNR": meta["config"]["overscan_rows"],
    }


def _write_frame(out: Path, stem: str, frame: SimulatedFrame, seed: int, index: int, fmt: str) -> Path:
    """Truth first, the frame last: a frame on disk always has its truth beside it."""
    from . import io

    frame.metadata["dataset"] = {"seed": int(seed), "index": index, "frame": f"{stem}.{fmt}"}
    _write_truth(out, stem, frame)
    header = _fits_keywords(frame) if fmt == "fits" else None
    return io.write_frame(out / f"{stem}.{fmt}", frame.image, header=header)


def _write_ccd(out: Path, stem: str, frames: list[SimulatedFrame], seed: int, index: int, fmt: str) -> list[Path]:
    """One multi-extension FITS file (or one .npy per amplifier), each amplifier's truth beside it."""
    from . import io

    if fmt == "npy":
        return [
            _write_frame(out, f"{stem}_{f.metadata['amplifier']['name']}", f, seed, index, fmt) for f in frames
        ]
    for frame in frames:
        frame.metadata["dataset"] = {"seed": int(seed), "index": index, "frame": f"{stem}.{fmt}"}
        _write_truth(out, f"{stem}_{frame.metadata['amplifier']['name']}", frame)
    extensions = [
        (frame.image, {**_fits_keywords(frame), "EXTNAME": frame.metadata["amplifier"]["name"]}) for frame in frames
    ]
    return [io.write_fits_extensions(out / f"{stem}.{fmt}", extensions, {"NAMPS": len(frames)})]
