"""The one source of a frame's pedestal, read noise and gain.

Normalisation, the ``physical`` auto-label preset, the catalogue and the masks all measure charge
above a pedestal in units of a noise. Where a frame resolves single electrons the pedestal is the
zero-electron peak of each row and the noise the width of that peak (:mod:`calibrate`'s comb
fit): the median and MAD would sit on the dark current (at λ ≈ 0.8 e⁻/px and σ = 0.16 e⁻ they
give a pedestal 0.5 e⁻ high and a noise five times too large). Everywhere else the robust
estimates of :mod:`noise` are used exactly as they always were, so frames that do not resolve
electrons normalise bit for bit as before (the bundled model was trained on them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibrate import Calibration, _active_mask, _calibrate_peaks, _grid_step, _header_gain, dark_current_by_row
from .errors import InputError
from .noise import minus_offset, robust_levels

SCALE_MAX_CHI2_NDOF = 50.0
"""A comb fitting worse than a calibration accepts still gives the pedestal and σ: on a 1536 × 6144
amplifier (9.5 M pixels) the overscan columns mixed into the bands of rows (before they were found
in the data and left out) gave χ²/ndof ≈ 11; a wrong spacing gives hundreds."""
DENSE_DARK_E = 0.2
"""e⁻/px: above it one empty pixel in six holds a dark-current electron, each a 6 σ hit at skipper
noise (σ ≈ 0.16 e⁻), and a network reads a frame sown with them as glow (docs/benchmarks.md
section 11); the bundled model was trained up to 0.1. The comb fit's λ takes in cluster halos
(0.11–0.14 on 192 × 256 ``skipper`` frames of 0.01 e⁻/px, 0.013 at 512²): the line sits above both."""
ROBUST = "robust"
"""``method`` of a frame scaled by the robust estimates (median, MAD) of :mod:`noise`."""


@dataclass(frozen=True)
class FrameScale:
    """Pedestal of each row, read noise and gain of one frame (one amplifier), in ADU."""

    pedestal_adu: float
    """The frame's pedestal: its zero-electron peak, or the median of its pixels."""
    row_offset_adu: np.ndarray
    """(rows,) float32: each row's pedestal minus ``pedestal_adu``."""
    noise_adu: float
    """Read noise σ in ADU: the zero-electron peak's width, or the MAD of the row-subtracted frame."""
    gain_adu_per_e: float | None
    """ADU per electron: the comb's spacing or the calibration's; None when nothing says."""
    method: str
    """``robust``, or the calibration's method (``peaks`` when the frame's own comb gave it)."""
    row_dark_e: np.ndarray | None = None
    """(rows,) dark current λ of each row, e⁻/px, where the frame resolves electrons; else None."""

    @property
    def row_pedestal_adu(self) -> np.ndarray:
        """(rows,) float64 pedestal of each row, ADU."""
        return self.pedestal_adu + self.row_offset_adu.astype(np.float64)

    @property
    def resolves_electrons(self) -> bool:
        return self.method == "peaks"

    @property
    def dense_dark_current(self) -> bool:
        """The frame resolves electrons and its mean dark current exceeds :data:`DENSE_DARK_E`."""
        return self.row_dark_e is not None and bool(self.gain_adu_per_e) and float(np.mean(self.row_dark_e)) > DENSE_DARK_E

    def above_background(self, image: np.ndarray) -> np.ndarray:
        """float32 ``image`` above each row's mean background (zero-electron peak + λ·g) in units
        of that row's background spread √(σ² + λ)·g: dark current counted as noise, as on a
        conventional frame (a rise along the rows comes out flat). Pre- and overscan columns and
        rows, which collect no dark current, are taken in units of the read noise σ·g, so they too
        come out with mean 0 and spread 1 rather than as a flat dark region. Needs ``row_dark_e``."""
        if self.row_dark_e is None or not self.gain_adu_per_e:
            raise InputError("this frame's scale has no dark current: it does not resolve electrons")
        gain, sigma_e = self.gain_adu_per_e, self.noise_adu / self.gain_adu_per_e
        z = self.above_pedestal(image)
        rows, columns = _collect_dark_current(z / np.float32(gain), self.row_dark_e)
        lam = self.row_dark_e.astype(np.float64)
        offset = (lam * gain).astype(np.float32)[:, None]
        spread = (np.sqrt(sigma_e**2 + lam) * gain).astype(np.float32)[:, None]
        read_noise = np.float32(sigma_e * gain)
        z -= offset
        z /= spread
        # pixels that collect no dark current: back to what was read, then in read-noise units
        z[:, ~columns] = (z[:, ~columns] * spread + offset) / read_noise
        empty_rows = np.ix_(~rows, columns)
        z[empty_rows] = (z[empty_rows] * spread[~rows] + offset[~rows]) / read_noise
        return z

    def above_pedestal(self, image: np.ndarray) -> np.ndarray:
        """float32 ``image`` minus its row pedestals (ADU): the frame's pedestal is removed in
        float64 first, so raw pedestals of 10⁴–10⁶ ADU keep a skipper frame's precision."""
        array = np.asarray(image)
        if array.ndim != 2 or array.shape[0] != self.row_offset_adu.size:
            raise InputError(f"a frame scale of {self.row_offset_adu.size} rows does not fit an image of shape "
                             f"{array.shape}; measure it on this frame")
        z = minus_offset(array, self.pedestal_adu)
        z -= self.row_offset_adu[:, None]
        return z

    def electrons(self, image: np.ndarray) -> np.ndarray:
        """float32 ``image`` in electrons above its row pedestals; needs a gain."""
        if self.gain_adu_per_e is None:
            raise InputError("this frame's scale has no gain: it does not resolve electrons and none was given")
        q = self.above_pedestal(image)
        q /= np.float32(self.gain_adu_per_e)
        return q


def _collect_dark_current(electrons: np.ndarray, row_dark_e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows,) and (cols,) bool: False for the rows and columns whose mean count (each pixel's
    rounded electrons, 0–3, so clusters weigh little) is under half the dark current expected
    there — prescan, overscan and dead columns, overscan rows — True for the others."""
    counts = np.clip(np.rint(electrons, out=electrons), 0, 3, out=electrons)
    expected = np.maximum(row_dark_e.astype(np.float64), 1e-9)
    columns = counts.mean(axis=0) > 0.5 * expected.mean()
    if not columns.any():
        return np.ones(expected.size, bool), columns
    in_columns = counts.sum(axis=1) - counts[:, ~columns].sum(axis=1)
    return in_columns / columns.sum() > 0.5 * expected, columns


def frame_scale(image: np.ndarray, *, calibration: Calibration | None = None,
                header: dict | None = None) -> FrameScale:
    """Pedestal, noise and gain of a 2-D frame: THE source for every module that needs them.

    1. A ``calibration`` that resolves electrons (``method == "peaks"``) wins: its row
       pedestals, σ·g and g. One that took its gain from elsewhere (``given``, ``file``,
       ``header``) lends its gain only: its pedestal and noise are the robust ones anyway.
    2. Otherwise the frame's own comb of electron peaks, when it shows one (a quick look at
       ≤ 262 144 pixels turns away the frames that do not in ~0.1 s; the header's
       PRESCAN/OVERSCAN, or their empty columns and rows, keep pre- and overscan out of λ).
    3. Otherwise the robust estimates, computed as normalisation always did: the median of the
       frame, the row pedestals of what is left, the MAD-based σ after removing them.
    """
    array = np.asarray(image)
    found = electron_scale(array, calibration=calibration, header=header)
    if found is not None:
        return found
    gain = calibration.gain_adu_per_e if calibration is not None else _header_gain(header, "frame")
    return _robust(array, gain, calibration.method if calibration is not None else ROBUST)


def electron_scale(image: np.ndarray, *, calibration: Calibration | None = None,
                   header: dict | None = None) -> FrameScale | None:
    """:func:`frame_scale` of a frame that resolves electrons (steps 1 and 2), else None."""
    array = np.asarray(image)
    if array.ndim != 2 or min(array.shape) < 1:
        raise InputError(f"expected a 2-D frame, got shape {array.shape}")
    if calibration is not None:
        return _from_calibration(array, calibration) if calibration.resolves_electrons else None
    return _resolved(array, header)


def _from_calibration(array: np.ndarray, calibration: Calibration) -> FrameScale:
    rows = calibration.row_pedestal_adu
    if rows.size != array.shape[0]:
        raise InputError(f"{calibration.frame}: calibration has {rows.size} row pedestals, the image has shape "
                         f"{array.shape}; use the calibration made from this frame")
    return FrameScale(
        pedestal_adu=float(calibration.pedestal_adu),
        row_offset_adu=(rows - calibration.pedestal_adu).astype(np.float32),
        noise_adu=float(calibration.noise_adu), gain_adu_per_e=float(calibration.gain_adu_per_e),
        method=calibration.method, row_dark_e=calibration.row_dark_e().astype(np.float32),
    )


def _resolved(array: np.ndarray, header: dict | None) -> FrameScale | None:
    """The frame's own comb, or None when it shows none."""
    plane = array.astype(np.float32, copy=False)
    if not np.isfinite(plane).all():
        return None  # callers refuse NaN frames with their own names (noise.check_finite)
    found = _calibrate_peaks(plane, np.ones(plane.shape, bool), _active_mask(plane.shape, header),
                             _grid_step(plane), None, max_chi2_ndof=SCALE_MAX_CHI2_NDOF)
    if found.reason:
        return None
    comb = found.comb
    return FrameScale(
        pedestal_adu=float(comb.mu0), row_offset_adu=(found.row_pedestal - comb.mu0).astype(np.float32),
        noise_adu=float(comb.sigma * comb.gain), gain_adu_per_e=float(comb.gain), method="peaks",
        row_dark_e=dark_current_by_row(found.bands, plane.shape[0]).astype(np.float32),
    )


def robust_scale(image: np.ndarray) -> FrameScale:
    """:func:`frame_scale`'s step 3 whatever the frame: what models trained before it saw."""
    return _robust(np.asarray(image), None, ROBUST)


def _robust(array: np.ndarray, gain: float | None, method: str) -> FrameScale:
    """Median, row pedestals of the rest, MAD-based σ after removing them: normalisation's old recipe."""
    pedestal, rows, sigma = robust_levels(array)
    return FrameScale(pedestal_adu=pedestal, row_offset_adu=rows, noise_adu=sigma, gain_adu_per_e=gain,
                      method=method)
