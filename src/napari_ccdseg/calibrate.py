"""Gain, read noise, dark current and pedestal of each amplifier, fitted from the image itself.

A skipper frame averaged over many samples resolves single electrons: its pixel histogram is a
comb of Gaussian peaks at μ₀ + k·g ADU (k electrons, g the gain in ADU/e⁻), each σ·g wide (σ the
read noise in e⁻), with heights Poisson(k; λ) (λ the dark current in e⁻ per pixel). A binned
maximum-likelihood fit of that comb (iminuit) gives all four with their errors, the way DAMIC-M's
pipeline calibrates. Frames that do not resolve electrons (σ ≳ 0.5 e⁻) take the gain from the user,
a previous calibration file or the header's GAIN keyword, and say which in ``method``.
The fit, the per-row pedestal and the limits are explained in docs/catalogue.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_text
from .errors import InputError

EV_PER_E_DEFAULT = 3.75
"""eV per electron-hole pair in silicon at operating temperature (configurable everywhere)."""
METHODS = ("peaks", "given", "header", "file")
"""Where the gain came from: the fitted comb, ``--gain``, the header's GAIN keyword, a calibration file."""


@dataclass
class Calibration:
    """The calibration of one amplifier (one frame, or one FITS image extension)."""

    frame: str
    """File name (or the layer / frame name when not from a file)."""
    hdu: int
    """HDU index in the file (0 for non-FITS)."""
    extname: str | None
    gain_adu_per_e: float
    gain_err: float
    """0.0 when the gain was given by the user, the header or a file."""
    noise_e: float
    """Read noise σ in electrons."""
    noise_err: float
    dark_current_e_per_px: float
    """λ, electrons per pixel; NaN when the peaks are not resolved."""
    dark_err: float
    pedestal_adu: float
    """Zero-electron peak of the whole frame (the median of the frame when not resolved)."""
    pedestal_err: float
    method: str
    row_pedestal_adu: np.ndarray
    """(rows,) zero-electron peak of each row, ADU (robust row pedestal when not resolved)."""
    dark_bands: list[dict] = field(default_factory=list)
    """λ per band of rows: [{"row_start", "row_stop", "dark_current_e_per_px", "dark_err"}] (empty when not resolved)."""
    fit: dict = field(default_factory=dict)
    """How the comb fit went (peaks only): pixels, peaks, bins, range, χ²/ndof; empty otherwise."""

    def __post_init__(self) -> None:
        self.row_pedestal_adu = np.asarray(self.row_pedestal_adu, dtype=np.float64).ravel()
        if self.method not in METHODS:
            raise InputError(f"{self.frame}: calibration method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not (math.isfinite(self.gain_adu_per_e) and self.gain_adu_per_e > 0):
            raise InputError(f"{self.frame}: gain must be a positive number of ADU per electron, got {self.gain_adu_per_e!r}")

    @property
    def resolves_electrons(self) -> bool:
        """True when the frame's own comb of electron peaks gave the calibration."""
        return self.method == "peaks"

    @property
    def noise_adu(self) -> float:
        """Read noise σ in ADU."""
        return self.noise_e * self.gain_adu_per_e

    def electrons(self, image: np.ndarray) -> np.ndarray:
        """The frame in electrons: each row minus its zero-electron pedestal, over the gain (float32)."""
        array = np.asarray(image)
        if array.ndim != 2 or array.shape[0] != self.row_pedestal_adu.size:
            raise InputError(
                f"{self.frame}: calibration has {self.row_pedestal_adu.size} row pedestals, "
                f"the image has shape {array.shape}; use the calibration made from this frame"
            )
        pedestal = self.row_pedestal_adu.astype(np.float32)[:, None]
        return ((array.astype(np.float32, copy=False) - pedestal) / np.float32(self.gain_adu_per_e)).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-able dict: the keys of the issue's calibration.json first, NaN as null."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["row_pedestal_adu"] = self.row_pedestal_adu.tolist()
        return _jsonable(out)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        """Inverse of :meth:`to_dict`; InputError naming the missing or bad key."""
        if not isinstance(data, dict):
            raise InputError(f"a calibration must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        required = [f.name for f in fields(cls) if f.name not in ("dark_bands", "fit")]
        missing = [name for name in required if name not in data]
        if missing:
            raise InputError(f"calibration of {data.get('frame', '?')!r} lacks {', '.join(missing)}")
        values = {name: data[name] for name in names if name in data}
        try:
            for name in ("gain_adu_per_e", "gain_err", "noise_e", "noise_err", "dark_current_e_per_px",
                         "dark_err", "pedestal_adu", "pedestal_err"):
                values[name] = math.nan if values[name] is None else float(values[name])
            values["hdu"] = int(values["hdu"])
            values["frame"] = str(values["frame"])
            values["extname"] = None if values["extname"] is None else str(values["extname"])
            rows = [math.nan if v is None else float(v) for v in values["row_pedestal_adu"]]
            values["row_pedestal_adu"] = np.asarray(rows, dtype=np.float64)
            values["dark_bands"] = [
                {key: math.nan if band[key] is None else band[key] for key in band}
                for band in values.get("dark_bands", [])
            ]
        except (TypeError, ValueError, KeyError) as error:
            raise InputError(f"calibration of {data.get('frame', '?')!r} has a bad value ({error})") from None
        return cls(**values)


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays converted, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------- files


def write_calibration(path: str | Path, calibrations: list[Calibration]) -> Path:
    """``{"amplifiers": [...]}`` as JSON, atomically."""
    document = {"amplifiers": [cal.to_dict() for cal in calibrations]}
    return atomic_write_text(path, json.dumps(document, indent=1, allow_nan=False) + "\n")


def read_calibration(path: str | Path) -> list[Calibration]:
    """The amplifiers of a calibration.json; InputError naming the file on any problem."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: calibration file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the calibration file ({error})") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not a JSON calibration file ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("amplifiers"), list):
        raise InputError(f'{path}: a calibration file holds {{"amplifiers": [...]}} as `ccdseg calibrate` writes it')
    try:
        return [Calibration.from_dict(entry) for entry in document["amplifiers"]]
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def find_calibration(calibrations: list[Calibration] | None, frame: str, hdu: int,
                     extname: str | None = None) -> Calibration | None:
    """The calibration for (file name, HDU); else the only one of the same amplifier in another file.

    A calibration measured on one frame (say a long dark exposure) serves the later frames of the
    same amplifier: same EXTNAME, else same HDU index, provided exactly one entry matches.
    """
    calibrations = calibrations or []
    for cal in calibrations:
        if cal.frame == frame and cal.hdu == hdu:
            return cal
    for same in (
        [c for c in calibrations if extname is not None and c.extname == extname],
        [c for c in calibrations if c.hdu == hdu],
    ):
        if len(same) == 1:
            return same[0]
    return None
