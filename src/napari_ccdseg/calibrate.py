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

import numpy as np

from .atomic import atomic_write_text, jsonable
from .errors import InputError
from .noise import _finite_sample, check_finite, pedestal_noise, robust_levels, row_pedestals
from .report_text import plus_minus as _pm

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
    """λ per band of rows: [{"row_start", "row_stop", "dark_current_e_per_px", "dark_err"}]; empty when not resolved."""
    fit: dict = field(default_factory=dict)
    """How the comb fit went (peaks only): pixels, peaks, bins, range, χ²/ndof; empty otherwise."""

    def __post_init__(self) -> None:
        self.row_pedestal_adu = np.asarray(self.row_pedestal_adu, dtype=np.float64).ravel()
        if self.method not in METHODS:
            raise InputError(
                f"{self.frame}: calibration method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        if not (math.isfinite(self.gain_adu_per_e) and self.gain_adu_per_e > 0):
            raise InputError(
                f"{self.frame}: gain must be a positive number of ADU per electron, got {self.gain_adu_per_e!r}"
            )

    @property
    def resolves_electrons(self) -> bool:
        """True when the frame's own comb of electron peaks gave the calibration."""
        return self.method == "peaks"

    @property
    def noise_adu(self) -> float:
        """Read noise σ in ADU."""
        return self.noise_e * self.gain_adu_per_e

    def row_dark_e(self) -> np.ndarray:
        """(rows,) λ of each row, e⁻/px: its band's (:func:`dark_current_by_row`), the one λ when no
        band is recorded, 0 when the peaks are not resolved (no λ was measured)."""
        rows = self.row_pedestal_adu.size
        if self.dark_bands:
            return dark_current_by_row(self.dark_bands, rows)
        return np.full(rows, 0.0 if math.isnan(self.dark_current_e_per_px) else self.dark_current_e_per_px)

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
        return jsonable(out)

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
            values["dark_bands"] = [_dark_band(band) for band in values.get("dark_bands", [])]
        except (TypeError, ValueError, KeyError) as error:
            raise InputError(f"calibration of {data.get('frame', '?')!r} has a bad value ({error})") from None
        return cls(**values)


def _dark_band(band: dict) -> dict:
    """One entry of ``dark_bands`` with its four keys as numbers (null: NaN); KeyError/TypeError/ValueError else."""
    def number(value):
        return math.nan if value is None else float(value)

    return {"row_start": int(band["row_start"]), "row_stop": int(band["row_stop"]),
            "dark_current_e_per_px": number(band["dark_current_e_per_px"]), "dark_err": number(band["dark_err"])}


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
                     extname: str | None = None, *, same_frame: bool = False) -> Calibration | None:
    """The calibration for (file name, HDU); else the only one of the same amplifier in another file.

    A calibration measured on one frame (say a long dark exposure) serves the later frames of the
    same amplifier: same EXTNAME, else same HDU index, provided exactly one entry matches.
    ``same_frame``: only the calibration of this very image (its row pedestals are needed, and
    another frame's would be wrong: the pedestal drifts from one readout to the next).
    """
    calibrations = calibrations or []
    for cal in calibrations:
        if cal.frame == frame and cal.hdu == hdu:
            return cal
    if same_frame:
        return None
    for same in (
        [c for c in calibrations if extname is not None and c.extname == extname],
        [c for c in calibrations if c.hdu == hdu],
    ):
        if len(same) == 1:
            return same[0]
    return None


# ---------------------------------------------------------------- the comb fit

RESOLVED_MAX_NOISE_E = 0.5
"""Read noise (e⁻) from which the comb counts as unresolved: peaks 2σ apart merge."""
MAX_GAIN_REL_ERR = 0.05
"""A comb whose gain is known worse than this (too few electrons to see a second peak) is not used."""
MIN_ELECTRON_PIXELS = 20
"""…nor one whose fitted pixels hold fewer electrons than this (no one-electron peak to measure g on)."""
MAX_CHI2_NDOF = 10.0
"""A comb fitting worse than this (a wrong spacing, peaks blurred by a drift) is not used."""
_POISSON_TAIL = 1e-4
"""Peaks are summed up to K electrons, P(k > K; λ) below this."""
_MIN_PEAKS = 3
_LOW_SIGMAS = 5.0
"""The fit range starts this many σ below the zero-electron peak."""
_BINS_PER_SIGMA = 4
_MIN_SIGMA_E = 1e-3
"""The fit's lower limit on σ (e⁻); a comb fitted at it is no read-noise peak."""
_MAX_FIT_BINS = 2000
"""Bins per band at most: a nearly noiseless comb over tens of electrons would otherwise take 10⁵
bins and minutes (the binned likelihood integrates each peak over its bins, so wider bins stay exact)."""
_MAX_BANDS = 16
_BAND_MIN_PIXELS = 4000
"""λ is fitted in up to 16 bands of rows, each holding at least this many pixels…"""
_BAND_MIN_ELECTRONS = 100
"""…and this many dark-current electrons."""
_GOOD_FIT = 3.0
"""A trial fit with χ²/ndof below this needs no row alignment first; above, the better of both is kept."""
_TRIAL_PIXELS = 2_000_000
"""The trial fit takes every n-th pixel, at least this many: it only has to find the comb."""
_MAX_ROW_COLUMNS = 512
"""Columns sampled per row for its pedestal: its error, σ/√512, adds 0.2 % to σ² once subtracted."""
_MIN_ROW_PIXELS = 8
"""Rows with fewer usable pixels take their pedestal from their neighbours."""
_SEED_EXPECTED = 0.1
"""Pixels holding more electrons than dark current gives this many times per frame seed a cluster mask."""
_SEED_DILATION = 2
"""…dilated by this many pixels, so the faint halo of a cluster leaves the fit too."""
MIN_PEAK_SIGNIFICANCE = 5.0
"""The one-electron peak must stand this many Poisson σ above the charge beyond it…"""
MIN_DIP_SIGNIFICANCE = 2.0
"""…and this many above the charge between it and the zero-electron peak: at σ ≳ 0.3 e⁻ that
window lies in the zero-electron peak's tail, whose Poisson error leaves a real peak 2–6 σ there."""
MAX_LINE_SHARE = 2.0
"""Bright columns and rows may hold at most this many times the pixels with charge of the rest."""
MAX_NEIGHBOUR_EXCESS = 0.5
"""Pixels below one holding electrons may hold electrons this much more often than pixels below an empty one."""
_PEAK_GAP = 3.0
"""Peak widths σ·g between the electron peaks and the windows that judge the one-electron peak."""
_QUICK_PIXELS = 262_144
"""The quick look that turns away frames without a comb samples at most this many pixels."""


@dataclass
class _Comb:
    """The comb in ADU (σ in e⁻), λ of each band of rows, their errors, and how the fit went."""

    mu0: float
    gain: float
    sigma: float
    lams: np.ndarray
    """λ of each band of rows (e⁻/px)."""
    lam_errs: np.ndarray
    lam: float
    """λ of the whole frame: the bands' λ weighted by their pixels."""
    pixels: int
    errors: dict[str, float]
    edges: np.ndarray
    peaks: int
    valid: bool
    chi2: float
    ndof: int


def _peaks_for(lam: float) -> int:
    """K: the largest electron count summed, P(k > K; λ) < 1e-4, at least 3."""
    from scipy import stats

    return max(_MIN_PEAKS, int(stats.poisson.isf(_POISSON_TAIL, max(lam, 1e-9))))


def _fit_edges(mu0: float, gain: float, sigma_adu: float, peaks: int, step: float) -> np.ndarray:
    """Bins of σ/4 (at most 2000 of them) from μ₀ − 5σ to μ₀ + (K + ½)·g; on an ADC grid, whole
    steps with edges between codes."""
    lo, hi = mu0 - _LOW_SIGMAS * sigma_adu, mu0 + (peaks + 0.5) * gain
    width = max(sigma_adu / _BINS_PER_SIGMA, (hi - lo) / _MAX_FIT_BINS)
    if step > 0:
        width = step * max(1, round(width / step))
        lo = (math.floor(lo / step) - 0.5) * step
    n = max(8, int(math.ceil((hi - lo) / width)))
    return lo + width * np.arange(n + 1)


def _expected_counts(totals: np.ndarray, edges: np.ndarray, peaks: int, mu0: float, gain: float, sigma: float,
                     lams: np.ndarray, smear_adu2: float) -> np.ndarray:
    """(bands, bins) counts of Σₖ Poisson(k; λᵦ)·Gauss(x; μ₀ + k·g, σ·g), k = 0…K, each band scaled to its total.

    Scaling each band to its observed total is the maximum-likelihood value of its normalisation.
    ``smear_adu2`` is the known variance added by rounding row shifts to the ADC's grid.
    """
    from scipy.special import gammaln, ndtr

    k = np.arange(peaks + 1, dtype=np.float64)
    lam = np.maximum(np.asarray(lams, dtype=np.float64), 1e-300)
    width = math.sqrt((sigma * gain) ** 2 + smear_adu2)
    in_bin = np.diff(ndtr((edges[None, :] - mu0 - k[:, None] * gain) / width), axis=1)
    weights = np.exp(k * np.log(lam)[:, None] - lam[:, None] - gammaln(k + 1))
    shape = np.maximum(weights @ in_bin, 1e-300)
    return np.asarray(totals, dtype=np.float64).reshape(-1, 1) * shape / shape.sum(axis=1, keepdims=True)


def _comb_deviance(counts: np.ndarray, edges: np.ndarray, peaks: int, smear_adu2: float):
    """Poisson deviance of the bands' histograms under Normᵦ·Σₖ Poisson(k; λᵦ)·Gauss(x; μ₀ + k·g, σ·g).

    μ₀, g and σ are shared by every band of rows, λᵦ and Normᵦ are each band's: dark current grows
    along the readout, and a mixture of Poissons of different λ is no Poisson. Each Normᵦ is
    profiled out (see :func:`_expected_counts`), which leaves λ's errors as they are and Minuit
    3 + B parameters instead of 3 + 2B. The deviance is −2 ln of the likelihood ratio to a perfect
    fit: χ²-distributed, errordef 1.
    """
    filled = counts > 0
    saturated = np.where(filled, counts * np.log(np.where(filled, counts, 1)), 0).sum()
    totals = counts.sum(axis=1)

    def deviance(params: np.ndarray) -> float:
        expected = _expected_counts(totals, edges, peaks, params[0], params[1], params[2], params[3:], smear_adu2)
        return float(2 * (saturated - (counts * np.log(np.maximum(expected, 1e-300))).sum()))

    return deviance


def _fit_comb(groups: list[np.ndarray], start: tuple[float, float, float, np.ndarray], step: float,
              smear_adu2: float = 0.0) -> _Comb:
    """Binned extended maximum-likelihood fit of the comb in every band of rows at once (iminuit
    MIGRAD, errors from HESSE). Peaks and range follow λ and σ, so the fit is redone until they settle."""
    from iminuit import Minuit

    mu0, gain, sigma, lams = start
    lams = np.broadcast_to(np.asarray(lams, dtype=np.float64), (len(groups),)).copy()
    pixels = np.array([v.size for v in groups], dtype=np.float64)
    comb = None
    for _ in range(4):
        peaks = _peaks_for(float(lams.max()))
        edges = _fit_edges(mu0, gain, math.sqrt((sigma * gain) ** 2 + smear_adu2), peaks, step)
        counts = np.stack([np.histogram(v, edges)[0] for v in groups]).astype(np.float64)
        bands = range(len(groups))
        names = ["mu0", "gain", "sigma", *(f"lam{b}" for b in bands)]
        m = Minuit(_comb_deviance(counts, edges, peaks, smear_adu2), [mu0, gain, sigma, *np.maximum(lams, 1e-4)],
                   name=names)
        m.errordef = Minuit.LEAST_SQUARES
        m.limits["mu0"] = (mu0 - gain / 2, mu0 + gain / 2)
        m.limits["gain"] = (0.5 * gain, 2.0 * gain)
        m.limits["sigma"] = (_MIN_SIGMA_E, 2.0)
        for b in bands:
            m.limits[f"lam{b}"] = (0, 50)
        m.migrad()
        m.hesse()
        if not m.valid:  # HESSE found no positive-definite covariance: once more, more carefully
            m.strategy = 2
            m.migrad()
            m.hesse()
        settled = abs(m.values["sigma"] - sigma) < 0.1 * sigma
        mu0, gain, sigma = (float(m.values[name]) for name in ("mu0", "gain", "sigma"))
        lams = np.array([m.values[f"lam{b}"] for b in bands])
        settled &= _peaks_for(float(lams.max())) == peaks
        lam_names = [f"lam{b}" for b in bands]
        share = pixels / pixels.sum()
        fitted = m.covariance is not None  # HESSE can fail on a comb that is not there
        covariance = (np.array([[m.covariance[a, b] for b in lam_names] for a in lam_names]) if fitted
                      else np.full((len(lam_names), len(lam_names)), np.nan))
        comb = _Comb(
            mu0=mu0, gain=gain, sigma=sigma, lams=lams, lam_errs=np.array([m.errors[n] for n in lam_names]),
            lam=float(share @ lams), pixels=int(pixels.sum()), edges=edges, peaks=peaks, valid=bool(m.valid) and fitted,
            chi2=float(m.fval),
            ndof=int(counts.size - len(names) - len(groups)),
            errors={"mu0": float(m.errors["mu0"]), "gain": float(m.errors["gain"]), "sigma": float(m.errors["sigma"]),
                    "lam": float(math.sqrt(max(share @ covariance @ share, 0.0))) if fitted else math.nan},
        )
        if settled:
            break
    return comb


def _bands(keep: np.ndarray, lam: float) -> list[tuple[int, int]]:
    """Up to 16 bands of rows of at least 4000 usable pixels and 100 electrons (at the frame's λ)
    each, over the rows that have any: a band with a few electrons pins no λ (HESSE fails)."""
    rows = np.flatnonzero(keep.any(axis=1))
    if rows.size == 0:
        return []
    first, last = int(rows[0]), int(rows[-1]) + 1
    pixels = int(keep.sum())
    n_bands = int(np.clip(min(pixels // _BAND_MIN_PIXELS, lam * pixels // _BAND_MIN_ELECTRONS), 1,
                          min(_MAX_BANDS, last - first)))
    bounds = np.round(np.linspace(first, last, n_bands + 1)).astype(int)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _grouped(data: np.ndarray, keep: np.ndarray, bands: list[tuple[int, int]]) -> list[np.ndarray]:
    return [data[start:stop][keep[start:stop]] for start, stop in bands]


def dark_current_by_row(dark_bands: list[dict], rows: int) -> np.ndarray:
    """λ of each of ``rows`` rows (e⁻/px) from a calibration's ``dark_bands``: its band's; rows
    outside every band (left out of the fit) interpolated between their neighbours, or the nearest
    band's beyond the first and last."""
    bounds = [(band["row_start"], band["row_stop"]) for band in dark_bands]
    return _by_row(bounds, [band["dark_current_e_per_px"] for band in dark_bands], rows)


def _by_row(bounds: list[tuple[int, int]], values, rows: int) -> np.ndarray:
    """One value per row from values per band of rows (``bounds``: start, stop), gaps filled."""
    lam = np.full(rows, np.nan)
    for (start, stop), value in zip(bounds, values):
        lam[start:stop] = value
    return _fill_rows(lam)


def _first_guess(values: np.ndarray, step: float, hint_gain: float | None) -> tuple[float, float, float, float] | None:
    """μ₀, g (ADU), σ (e⁻) and λ to start the fit from; None when no comb shows.

    The zero-electron peak is the histogram's *lowest* significant peak (not its median nor its
    mode: at λ > 1 e⁻/px the one-electron peak is the tallest); its width is the rms of its lower
    half, which no electron peak reaches. The gain is the distance to the next peak, found in what
    is left once that Gaussian is taken away (a small one-electron peak on its tail is only a
    shoulder), else ``hint_gain``.
    """
    from scipy.special import ndtr

    if values.size < 100:
        return None
    _, spread = pedestal_noise(values)  # at least σ·g: the comb only widens the core
    low, high = (float(v) for v in np.quantile(values, [1e-4, 0.9999]))
    centres, smooth = _smoothed_histogram(values, low - spread, high, spread / 8, step)
    zero = _peaks(centres, smooth, smooth)
    if not zero:
        return None
    mu0, sigma_adu = zero[0]
    for _ in range(2):  # bins of σ/3 around the peak just found: its centre and width settle
        centres, smooth = _smoothed_histogram(values, mu0 - 6 * sigma_adu, max(high, mu0 + 40 * sigma_adu),
                                              sigma_adu / 3, step)
        zero = _peaks(centres, smooth, smooth)
        if not zero:
            return None
        mu0, sigma_adu = zero[0]
    below = values[values < mu0].astype(np.float64) - mu0  # the zero peak's lower half: no electron peak reaches it
    if below.size > 10:
        sigma_adu = float(np.sqrt(np.mean(below**2)))
    width = float(centres[1] - centres[0])
    edges = np.append(centres - width / 2, centres[-1] + width / 2)
    zero_peak = 2 * below.size * np.diff(ndtr((edges - mu0) / sigma_adu))
    rest = smooth - np.convolve(zero_peak, [0.25, 0.5, 0.25], mode="same")
    above = centres > mu0 + 2 * sigma_adu
    found = [centre for centre, _ in _peaks(centres[above], rest[above], smooth[above])]
    if found:
        gain = float(np.min(np.diff([mu0, *found])))
    elif hint_gain is not None:
        gain = float(hint_gain)
    else:
        return None
    if gain <= 2 * sigma_adu:
        return None
    zero_fraction = np.count_nonzero(values < mu0 + gain / 2) / values.size
    return mu0, gain, sigma_adu / gain, float(-math.log(max(zero_fraction, 1e-3)))


def _peak_reason(values: np.ndarray, mu0: float, gain: float, sigma: float, lam: float, step: float) -> str:
    """Why the comb's one-electron peak is no peak (empty when it is one).

    A smooth continuum above the zero-electron peak (cluster halos, hot pixels of all charges)
    can be fitted with a Gaussian at μ₀ + g as well as a real peak can: the fit's χ² hardly
    notices a few hundred pixels. A real one-electron peak stands out where a continuum does not:
    the density of pixels within g/4 (at most 3σ·g) of μ₀ + g must exceed that just beyond it by
    ``MIN_PEAK_SIGNIFICANCE`` and that between the peaks by ``MIN_DIP_SIGNIFICANCE`` Poisson σ.
    Each density first loses what the zero-electron peak's Gaussian tail puts there; its error is
    the Poisson error of all that is expected there, tail included. The window between the peaks
    keeps ``_PEAK_GAP`` widths σ·g from both peaks where the gain leaves room, else it is the
    middle σ·g (a window starting g/4 above μ₀ held, at σ = 0.1 e⁻, thousands of tail pixels
    whose subtraction drowned a peak standing 15 σ out).
    """
    from scipy.special import ndtr

    def snap(x: float) -> float:  # window edges between ADC codes, where values sit on a grid
        return (math.floor(x / step) + 0.5) * step if step > 0 else x

    width = sigma * gain
    zero = values.size * math.exp(-max(lam, 0.0))
    gap = max(gain / 4, min(_PEAK_GAP * width, gain / 2 - width / 2))
    half = min(gain / 4, _PEAK_GAP * width)
    windows = ((gap, gain - gap), (gain - half, gain + half), (gain + half, gain + half + 2 * half))
    rate, error2 = [], []
    for low, high in windows:
        lo, hi = snap(mu0 + low), snap(mu0 + high)
        if hi <= lo:
            lo, hi = lo - step / 2, lo + step / 2
        n = int(np.count_nonzero((values >= lo) & (values < hi)))
        tail = zero * (ndtr((hi - mu0) / width) - ndtr((lo - mu0) / width))
        rate.append((n - tail) / (hi - lo))
        error2.append(max(n, tail, 1.0) / (hi - lo) ** 2)
    dip, stand = ((rate[1] - rate[side]) / math.sqrt(error2[1] + error2[side]) for side in (0, 2))
    if stand < MIN_PEAK_SIGNIFICANCE or dip < MIN_DIP_SIGNIFICANCE:
        return (f"its histogram shows no one-electron peak at {gain:.3g} ADU above the zero-electron peak "
                f"(it stands {stand:.1f} σ above the charge beyond it, {MIN_PEAK_SIGNIFICANCE:g} needed, and "
                f"{dip:.1f} σ above the charge below it, {MIN_DIP_SIGNIFICANCE:g} needed)")
    return ""


def _quick_look(image: np.ndarray, keep: np.ndarray, step: float,
                hint_gain: float | None) -> tuple[str, tuple[float, float, float, float] | None]:
    """Why the frame shows no comb, from a sample of at most 262 144 pixels (empty when it may),
    and the comb's first guess on that sample (a start for the trial fit).

    Most frames do not resolve electrons; this look costs ~10 ms where the full fit costs a
    second. Rows are aligned on their robust pedestals, and the look repeated, only when the
    sample's row medians scatter by more than 3 times their noise (a drifting pedestal may blur
    a comb). Their noise is the smaller of two: from the pixels' spread, and from the differences
    of neighbouring rows' medians (at λ ≳ 1 e⁻/px the first, ~1 e⁻/√columns, hid a slow drift of
    1/6 e⁻ rms).
    """
    rows = max(1, image.shape[0] // max(1, _QUICK_PIXELS // max(image.shape[1], 1)))
    columns = max(1, math.ceil(image.shape[1] * math.ceil(image.shape[0] / rows) / _QUICK_PIXELS))
    sample, ok = image[::rows, ::columns], keep[::rows, ::columns]
    reason, guess = _sample_reason(sample[ok], step, hint_gain)
    if not reason:
        return "", guess
    _, spread = pedestal_noise(sample[ok])
    medians = np.median(sample, axis=1).astype(np.float64)  # pixels left out by ``keep`` are too few to move a row's median
    if medians.size < 8:
        return reason, None
    neighbours = 1.4826 * float(np.median(np.abs(np.diff(medians)))) / math.sqrt(2)
    if np.std(medians) < 3 * min(1.2533 * spread / math.sqrt(sample.shape[1]), neighbours):
        return reason, None  # no drift along the rows hides a comb
    rough = row_pedestals(image).astype(np.float64)
    rough = np.round(rough / step) * step if step > 0 else rough
    aligned = sample - rough[::rows, None].astype(np.float32)
    reason, _ = _sample_reason(aligned[ok], step, hint_gain)
    return reason, None  # a guess on aligned rows is no start for the unaligned trial


def _sample_reason(values: np.ndarray, step: float,
                   hint_gain: float | None) -> tuple[str, tuple[float, float, float, float] | None]:
    guess = _first_guess(values, step, hint_gain)
    if guess is None:
        return "its histogram shows no second electron peak", None
    sigma = guess[2]
    if sigma >= RESOLVED_MAX_NOISE_E:
        return f"its read noise ({sigma:.2f} e-) blurs the electron peaks together", guess
    return "", guess  # the one-electron peak is judged on the trial's fitted comb: a first guess may be ~g/4


def _smoothed_histogram(values: np.ndarray, low: float, high: float, width: float,
                        step: float) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres and counts smoothed by [1, 2, 1]/4; on an ADC grid, bins of whole codes (no aliasing)."""
    if step > 0:
        width = step * max(1, round(width / step))
        low = (math.floor(low / step) - 0.5) * step
    bins = int(min(20_000, max(8, math.ceil((high - low) / width))))
    counts, edges = np.histogram(values, low + width * np.arange(bins + 1))
    return (edges[:-1] + edges[1:]) / 2, np.convolve(counts, [0.25, 0.5, 0.25], mode="same")


def _peaks(centres: np.ndarray, heights: np.ndarray, counts: np.ndarray) -> list[tuple[float, float]]:
    """(centre, σ) of the significant peaks of a smoothed histogram, lowest first.

    Significant: standing 4 Poisson σ of ``counts`` above the valleys beside it. Centre and σ from
    the Gaussian (a parabola in log) through its three top bins, less the smoothing's own width.
    """
    from scipy.signal import find_peaks

    if centres.size < 3:
        return []
    width = float(centres[1] - centres[0])
    found, _ = find_peaks(heights, prominence=4 * np.sqrt(0.375 * np.maximum(counts, 0) + 1))
    out = []
    for i in found:
        if not 0 < i < centres.size - 1:
            continue
        left, top, right = np.log(np.maximum(heights[i - 1 : i + 2], 0.5))
        curvature = left - 2 * top + right
        if curvature >= 0:
            continue
        shift = 0.5 * (left - right) / curvature
        sigma = math.sqrt(max(-1 / curvature - 7 / 12, 0.0)) * width  # less the smoothing's and the bin's variance
        out.append((float(centres[i] + shift * width), max(sigma, width / 2)))
    return out


def _row_offsets(image: np.ndarray, usable: np.ndarray, comb: _Comb, row_lam: np.ndarray,
                 start: np.ndarray | None = None) -> np.ndarray:
    """Zero-electron peak of each row minus the frame's (ADU, mean 0): follows a drifting pedestal.

    Start (unless given): the circular mean of each row's values modulo the gain (summed over
    neighbouring rows where one row is too noisy). Every electron count sits at the same phase, so
    dark current, however large, does not bias it (a per-row median sits on the one-electron peak
    from λ ≈ 0.7 on). Of the positions a whole gain apart, the row's zero-electron peak is the
    likeliest of the three about its lowest one holding 2 % of its pixels: no unwrapping along the
    rows, so a drift of many gains, even from one row to the next, is followed. Then a few EM
    steps fit each row's shift of the whole comb (g, σ, and the row's λ ``row_lam`` fixed) by
    maximum likelihood from up to 512 of its pixels. Rows with fewer than 8 usable pixels take the
    value of their neighbours.
    """
    stride = max(1, math.ceil(image.shape[1] / _MAX_ROW_COLUMNS))
    values = image[:, ::stride].astype(np.float32) - np.float32(comb.mu0)
    ok = usable[:, ::stride]
    n = ok.sum(axis=1)
    good = n >= _MIN_ROW_PIXELS
    if not good.any():
        return np.zeros(image.shape[0])
    lam = np.maximum(row_lam, 1e-300)[:, None]
    k = np.arange(comb.peaks + 1)
    log_weights = (k * np.log(lam) - lam - np.cumsum(np.log(np.maximum(k, 1)))).astype(np.float32)  # (rows, K + 1)
    if start is None:
        phasor = np.where(ok, np.exp(2j * np.pi * values / comb.gain), 0).sum(axis=1)
        coherence = math.exp(-2 * math.pi**2 * comb.sigma**2)  # |mean phasor| of one peak of width σ
        window = int(min(max(1, math.ceil(16 / (coherence**2 * max(np.median(n[good]), 1)))),
                         max(1, image.shape[0] // 8)))
        offsets = np.angle(np.convolve(phasor, np.ones(window), mode="same")) * comb.gain / (2 * np.pi)
        electrons = np.where(ok, np.round((values - offsets[:, None]) / comb.gain), np.inf)
        lowest = np.sort(electrons, axis=1)[np.arange(image.shape[0]), np.minimum((0.02 * n).astype(int), n.max() - 1)]
        lowest = np.where(good, lowest, 0)
        candidates = [offsets + comb.gain * (lowest + m) for m in (-1, 0, 1)]  # the zero peak's tail can reach 2 %
        likelihood = np.stack([_row_log_likelihood(values - c[:, None].astype(np.float32), ok, comb, log_weights)
                               for c in candidates])
        start = np.where(good, np.choose(np.argmax(likelihood, axis=0), candidates), np.nan)
    offsets = _fill_rows(np.asarray(start, dtype=np.float64))
    for _ in range(3):
        residual = values - offsets[:, None].astype(np.float32)
        inside = ok & (residual > -_LOW_SIGMAS * comb.sigma * comb.gain) & (residual < (comb.peaks + 0.5) * comb.gain)
        d, log_p = _nearest_peaks(residual, comb, log_weights)
        r = np.exp(log_p - log_p.max(axis=2, keepdims=True))
        mean_d = (r * d).sum(axis=2) / r.sum(axis=2)
        counted = inside.sum(axis=1)
        shift = np.where(inside, mean_d, 0).sum(axis=1) / np.maximum(counted, 1)
        if not (counted >= _MIN_ROW_PIXELS).any():
            return np.zeros(image.shape[0])
        offsets = _fill_rows(np.where(counted >= _MIN_ROW_PIXELS, offsets + shift, np.nan))
    return offsets - np.mean(offsets)


def _nearest_peaks(residual: np.ndarray, comb: _Comb, log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each pixel to its three nearest peaks (within 0…K), and log(Poisson weight · Gauss) of each.

    Peaks further away than 1.5 gains add nothing at σ < 0.5 e⁻, and three instead of K + 1 keep
    a 6000-row frame quick.
    """
    nearest = np.clip(np.round(residual / comb.gain), 1, comb.peaks - 1).astype(np.int64)  # K ≥ 3
    k = nearest[..., None] + np.arange(-1, 2)
    d = residual[..., None] - (k * comb.gain).astype(np.float32)
    weights = np.take_along_axis(np.broadcast_to(log_weights[:, None, :], (*residual.shape, log_weights.shape[1])),
                                 k, axis=2)
    width = comb.sigma * comb.gain
    log_p = weights - 0.5 * (d / np.float32(width)) ** 2 - np.float32(math.log(width * math.sqrt(2 * math.pi)))
    return d, log_p.astype(np.float32)


def _row_log_likelihood(residual: np.ndarray, ok: np.ndarray, comb: _Comb, log_weights: np.ndarray) -> np.ndarray:
    """Σ log(comb density) over each row's pixels, floored so that a cluster pixel weighs like a far miss."""
    _, log_p = _nearest_peaks(residual, comb, log_weights)
    top = log_p.max(axis=2)
    log_density = top + np.log(np.exp(log_p - top[..., None]).sum(axis=2))
    return np.where(ok, np.maximum(log_density, math.log(1e-6)), 0).sum(axis=1)


def _fill_rows(values: np.ndarray) -> np.ndarray:
    """NaN rows take the value interpolated between their nearest measured neighbours."""
    known = np.isfinite(values)
    if known.all() or not known.any():
        return np.nan_to_num(values)
    rows = np.arange(values.size)
    return np.interp(rows, rows[known], values[known])


def _charge_outside_the_dark_current(aligned: np.ndarray, usable: np.ndarray, comb: _Comb) -> np.ndarray:
    """Pixels whose charge is not dark current, or that collect none (:func:`_bright_and_lines`, both parts)."""
    bright, lines = _bright_and_lines(aligned, usable, comb)
    return (bright | lines) & usable


def _bright_and_lines(aligned: np.ndarray, usable: np.ndarray, comb: _Comb) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose charge is not dark current: bright pixels (clusters) with their halo, and
    glowing, hot or empty lines, each mask apart (usable pixels only).

    Seeds: pixels holding more electrons than dark current gives once in ten frames, dilated by 2
    pixels so the faint halo (1–3 e⁻ around a bright cluster) goes too; the dilation takes whole
    neighbourhoods, blind to their content, so it does not bias λ. Then columns, and rows, whose
    mean charge stands 5 Poisson σ above a robust straight line through all of them (a band of
    glowing columns, a hot column, a serial-register trail) or below it (overscan, prescan or dead
    columns a header did not name: they collect no dark current, and at ~1 e⁻/px the 72 overscan
    columns of a `damic-m` frame pulled λ 10–28 % low): dark current growing linearly along the
    readout does not stand out, at the frame's edges either.
    """
    from scipy import ndimage, stats

    pixels = max(int(usable.sum()), 1)
    seed_e = max(2, int(stats.poisson.isf(_SEED_EXPECTED / pixels, max(float(comb.lams.max()), 1e-9))) + 1)
    seeds = usable & (aligned > comb.mu0 + (seed_e - 0.5) * comb.gain)
    out = ndimage.binary_dilation(seeds, structure=np.ones((3, 3), bool), iterations=_SEED_DILATION)
    bright = out.copy()
    electrons = np.clip(np.round((aligned - comb.mu0) / comb.gain), 0, comb.peaks)
    for axis in (0, 1):  # axis 0: one value per column
        keep = usable & ~out
        n = keep.sum(axis=axis)
        mean = np.where(keep, electrons, 0).sum(axis=axis) / np.maximum(n, 1)
        measured = np.flatnonzero(n >= _MIN_ROW_PIXELS)
        if measured.size < 3:
            continue
        baseline = np.interp(np.arange(mean.size), measured, _robust_line(measured.astype(np.float64), mean[measured]))
        poisson_sigma = np.sqrt(np.maximum(baseline, 1e-6) / np.maximum(n, 1))
        off = (n >= _MIN_ROW_PIXELS) & (np.abs(mean - baseline) > 5 * poisson_sigma + 0.01)
        out |= off[None, :] if axis == 0 else off[:, None]
    return bright, out & ~bright


def _robust_line(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A straight line through y(x), refitted without the points 3 robust σ off it until they stay the same."""
    kept = np.ones(x.size, dtype=bool)
    for _ in range(10):
        slope, intercept = np.polyfit(x[kept], y[kept], 1)
        residual = y - (slope * x + intercept)
        scale = 1.4826 * float(np.median(np.abs(residual[kept])))
        now = np.abs(residual) <= 3 * max(scale, 1e-9)
        if now.sum() < 2 or np.array_equal(now, kept):
            break
        kept = now
    return slope * x + intercept


def _active_mask(shape: tuple[int, int], header: dict | None) -> np.ndarray:
    """True on the active area (the header's PRESCAN/OVERSCAN/OVERSCNR say where it is), else everywhere.

    Prescan and overscan pixels collect no dark current: in the histogram they would dilute λ.
    """
    from .masks import active_region

    mask = np.zeros(shape, dtype=bool)
    region = active_region(shape, header)
    if region is None:
        mask[:] = True
    else:
        (r0, r1), (c0, c1) = region
        mask[r0:r1, c0:c1] = True
    return mask


@dataclass
class _PeaksResult:
    comb: _Comb | None
    reason: str
    """Why the comb is not used; empty when it is."""
    row_pedestal: np.ndarray | None = None
    bands: list[dict] = field(default_factory=list)
    pixels: int = 0
    excluded: int = 0
    smear_adu: float = 0.0


def _calibrate_peaks(image: np.ndarray, usable: np.ndarray, active: np.ndarray, step: float,
                     hint_gain: float | None, max_chi2_ndof: float = MAX_CHI2_NDOF) -> _PeaksResult:
    """The comb fit of a frame: quick look, trial fit, per-row alignment, cluster masking, final fit, λ per band.

    ``max_chi2_ndof``: the worst final fit accepted (see :data:`MAX_CHI2_NDOF`)."""
    reason, guess = _quick_look(image, usable & active, step, hint_gain)
    if reason:
        return _PeaksResult(None, reason)
    comb, reason = _trial_comb(image, usable & active, step, hint_gain, guess)
    if reason:
        return _PeaksResult(comb, reason)
    bands = _bands(usable & active, comb.lam)
    counts = np.maximum((usable & active).sum(axis=1), 1e-9)
    offsets = None
    for last in (False, True):  # the second round aligns the rows with the comb fitted on aligned rows
        offsets = _row_offsets(image, usable, comb, _by_row(bands, comb.lams, image.shape[0]), start=offsets)
        shifts = np.round(offsets / step) * step if step > 0 else offsets
        smear = float(np.average((offsets - shifts) ** 2, weights=counts)) if step > 0 else 0.0
        aligned = image - shifts[:, None].astype(np.float32)
        bright, lines = _bright_and_lines(aligned, usable & active, comb)
        keep = usable & active & ~bright & ~lines
        regrouped = _bands(keep, comb.lam) or bands  # over the rows left: empty overscan rows would make a band of their own
        lams = comb.lams if regrouped == bands else [comb.lam]
        bands = regrouped
        comb = _fit_comb(_grouped(aligned, keep, bands), (comb.mu0, comb.gain, comb.sigma, lams), step, smear)
        if not comb.valid and len(bands) > 1:  # HESSE now and then fails with many bands: one λ for all rows
            bands = [(bands[0][0], bands[-1][1])]
            comb = _fit_comb(_grouped(aligned, keep, bands), (comb.mu0, comb.gain, comb.sigma, [comb.lam]), step, smear)
        reason = _unresolved_reason(comb, max_chi2_ndof if last else math.inf)  # round 1: rows aligned with one λ
        if reason:
            return _PeaksResult(comb, reason)
    reason = _patchy_reason(aligned, keep, comb) or _banded_reason(aligned, keep, lines & usable & active, comb)
    if reason:
        return _PeaksResult(comb, reason)
    dark_bands = [
        {"row_start": start, "row_stop": stop, "dark_current_e_per_px": float(lam), "dark_err": float(err)}
        for (start, stop), lam, err in zip(bands, comb.lams, comb.lam_errs)
    ]
    return _PeaksResult(
        comb, "", row_pedestal=comb.mu0 + offsets, bands=dark_bands,
        pixels=int(keep.sum()), excluded=int((usable & active).sum() - keep.sum()), smear_adu=math.sqrt(smear),
    )


def _banded_reason(aligned: np.ndarray, keep: np.ndarray, lines: np.ndarray, comb: _Comb) -> str:
    """Why the comb's electrons are not dark current spread over the frame (empty when they are).

    Columns or rows standing above the dark current's straight line (glowing bands, hot columns,
    trails), or below it (overscan, which holds none), are left out of the fit. When they hold more than twice as many pixels with charge
    as all the rest, the "one-electron peak" is the level of a glow band, not dark current
    (`seed-v1` frames with a band 40–60 columns wide at ~4 σ: 2.7–4.2 times; the skipper preset's
    amplifier glow and hot columns at λ = 0.01 e⁻/px: 0.5–1.0; `damic-m`: ≤ 0.1).
    """
    def occupied(where: np.ndarray) -> int:
        return int(np.count_nonzero(np.rint((aligned[where] - comb.mu0) / comb.gain) >= 1))

    in_lines, elsewhere = occupied(lines), occupied(keep)
    if in_lines > MAX_LINE_SHARE * elsewhere:
        return (f"its pixels holding charge lie mostly in bright columns or rows ({in_lines} there, {elsewhere} "
                "elsewhere): a band of glow, not dark current")
    return ""


def _patchy_reason(aligned: np.ndarray, keep: np.ndarray, comb: _Comb) -> str:
    """Why the pixels holding electrons are not scattered like dark current (empty when they are).

    Dark current puts electrons in pixels independently: the pixel below one holding charge
    holds charge about as often as the pixel below an empty one (a ramp of λ, vertical CTI
    trails and empty overscan columns add ~0.25 on the damic-m preset). A band of glow or a
    patch a few σ high makes a comb-like histogram too, but its "electrons" come in patches:
    the difference is then near 1 (0.84 on a 4 σ band over a third of a frame).
    """
    occupied = np.rint((aligned - comb.mu0) / comb.gain) >= 1
    pairs = keep[:-1] & keep[1:]
    above, below = occupied[:-1][pairs], occupied[1:][pairs]
    if above.sum() < MIN_ELECTRON_PIXELS or (~above).sum() < MIN_ELECTRON_PIXELS:
        return ""
    with_charge, without = float(below[above].mean()), float(below[~above].mean())
    if with_charge - without > MAX_NEIGHBOUR_EXCESS:
        return (f"its pixels holding charge come in patches, not scattered like dark current (the pixel below "
                f"holds charge {with_charge:.0%} of the time under one holding charge, "
                f"{without:.0%} under an empty one)")
    return ""


def _trial_comb(image: np.ndarray, keep: np.ndarray, step: float, hint_gain: float | None,
                quick_guess: tuple[float, float, float, float] | None = None) -> tuple[_Comb | None, str]:
    """A first fit of the whole frame's comb, one λ for all rows: gain and σ to align the rows
    with, or why there is none. Its χ² only ranks trials: a dark-current ramp spoils it.

    A pedestal drifting along the rows by more than the peaks' width blurs the frame's comb; the
    rows are then first aligned on their robust pedestals (:func:`noise.row_pedestals`), which may
    land a row on another peak than the zero-electron one: the spacing and widths stay right.
    Where the first guess finds no comb in the trial's pixels, the quick look's guess starts it.
    """
    comb, reason = None, "its histogram shows no second electron peak"
    for aligned in (False, True):
        rough = np.zeros(image.shape[0])
        if aligned:
            rough = row_pedestals(image).astype(np.float64)
            rough -= rough.mean()
            rough = np.round(rough / step) * step if step > 0 else rough
        values = (image - rough[:, None].astype(np.float32))[keep]
        values = values[:: max(1, values.size // _TRIAL_PIXELS)]
        guess = _first_guess(values, step, hint_gain) or (None if aligned else quick_guess)
        if guess is None:
            continue
        trial = _fit_comb([values], guess, step)
        trial_reason = _unresolved_reason(trial, math.inf) or _peak_reason(
            values, trial.mu0, trial.gain, trial.sigma, trial.lam, step)
        if comb is None or (not trial_reason and (reason or trial.chi2 / trial.ndof < comb.chi2 / comb.ndof)):
            comb, reason = trial, trial_reason
        if not reason and comb.chi2 < _GOOD_FIT * max(comb.ndof, 1):
            break
    return comb, reason


def _unresolved_reason(comb: _Comb, max_chi2_ndof: float = MAX_CHI2_NDOF) -> str:
    if not comb.valid:
        return "the fit of its electron peaks did not converge"
    if comb.sigma < 2 * _MIN_SIGMA_E:
        return "its peaks are narrower than any read noise (an ADC grid, not electrons)"
    if comb.sigma >= RESOLVED_MAX_NOISE_E:
        return f"its read noise ({comb.sigma:.2f} e-) blurs the electron peaks together"
    if comb.chi2 > max_chi2_ndof * max(comb.ndof, 1):
        return f"the comb does not describe its histogram (χ²/ndof = {comb.chi2:.0f}/{comb.ndof})"
    if comb.lam * comb.pixels < MIN_ELECTRON_PIXELS or not comb.errors["gain"] < MAX_GAIN_REL_ERR * comb.gain:
        return f"too few pixels hold an electron to measure the gain (λ = {comb.lam:.2g} e-/px)"
    return ""


# ---------------------------------------------------------------- frames and files


def calibrate_frame(
    image: np.ndarray,
    *,
    frame: str = "frame",
    hdu: int = 0,
    extname: str | None = None,
    header: dict | None = None,
    exclude: np.ndarray | None = None,
    gain: float | None = None,
    previous: Calibration | None = None,
) -> Calibration:
    """Calibrate one amplifier from its own comb of electron peaks, else from a gain given elsewhere.

    ``exclude`` marks pixels to leave out (clusters, hot pixels); bright pixels and their
    neighbours are left out as well. When the comb is not resolved (σ ≳ 0.5 e⁻, or no second
    peak) the gain comes from ``gain`` ("given"), else ``previous`` ("file"), else the header's GAIN
    keyword in ADU/e⁻, or 1 when its BUNIT says electrons ("header"): what the user passes wins over
    what the file says. Without any,
    InputError naming the frame and how to give a gain.
    """
    where = frame if hdu == 0 and extname is None else f"{frame} HDU {hdu}" + (f" ({extname})" if extname else "")
    array = np.asarray(image)
    if array.ndim != 2 or min(array.shape) < 1:
        raise InputError(f"{where}: expected a 2-D frame, got shape {array.shape}")
    check_finite(array, where)
    array = array.astype(np.float32, copy=False)
    usable = np.ones(array.shape, dtype=bool)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=bool)
        if exclude.shape != array.shape:
            raise InputError(f"{where}: the exclusion mask has shape {exclude.shape}, the frame {array.shape}")
        usable &= ~exclude
    if gain is not None and not (math.isfinite(gain) and gain > 0):
        raise InputError(f"{where}: the gain must be a positive number of ADU per electron, got {gain!r}")
    header_gain = _header_gain(header, where)
    fallback = next(
        ((value, method) for value, method in (
            (gain, "given"), (previous.gain_adu_per_e if previous else None, "file"), (header_gain, "header"),
        ) if value is not None),
        None,
    )
    step = _grid_step(array)
    active = _active_mask(array.shape, header)
    found = _calibrate_peaks(array, usable, active, step, fallback[0] if fallback else None)
    base = {"frame": frame, "hdu": int(hdu), "extname": extname}
    if not found.reason:
        comb = found.comb
        return Calibration(
            **base, gain_adu_per_e=comb.gain, gain_err=comb.errors["gain"], noise_e=comb.sigma,
            noise_err=comb.errors["sigma"], dark_current_e_per_px=comb.lam, dark_err=comb.errors["lam"],
            pedestal_adu=comb.mu0, pedestal_err=comb.errors["mu0"], method="peaks",
            row_pedestal_adu=found.row_pedestal, dark_bands=found.bands,
            fit={
                "pixels": found.pixels, "excluded_pixels": found.excluded, "peaks": comb.peaks + 1,
                "bins": int(comb.edges.size - 1), "range_adu": [float(comb.edges[0]), float(comb.edges[-1])],
                "chi2": comb.chi2, "ndof": comb.ndof, "quantisation_step_adu": step,
                "row_shift_rounding_adu": found.smear_adu, "active_region": _region(active),
            },
        )
    if fallback is None:
        raise InputError(
            f"{where}: cannot calibrate: {found.reason}, and no gain was given; pass --gain ADU_PER_E, or "
            "--calibration FILE (a calibration.json that `ccdseg calibrate` wrote for a frame of this amplifier "
            "that resolves electrons), or put a GAIN keyword (ADU per electron) in the header"
        )
    return _calibrate_with_gain(array, usable & active, fallback[0], fallback[1], base, found.reason)


def _region(active: np.ndarray) -> list[list[int]]:
    """[[row_start, row_stop], [col_start, col_stop]] of the active area."""
    rows, cols = np.flatnonzero(active.any(axis=1)), np.flatnonzero(active.any(axis=0))
    return [[int(rows[0]), int(rows[-1]) + 1], [int(cols[0]), int(cols[-1]) + 1]]


def _grid_step(image: np.ndarray) -> float:
    """The ADC's step when every value sits on one grid (integer codes, fpack), else 0.

    The smallest gap between distinct values, provided 95 % of the other gaps among the lowest
    99.9 % of the values are a whole number of it: sparse bright pixels far apart (whose float32
    spacing is coarser) and a few values off the grid do not hide it, as they would hide it from
    a median gap.
    """
    sample = _finite_sample(image)
    if sample.size == 0:
        return 0.0
    values = np.unique(sample[sample <= np.quantile(sample, 0.999)])  # float32 spacing of far glitches breaks a grid
    if values.size < 2 or values.size > sample.size // 4:
        return 0.0
    gaps = np.diff(values)
    step = float(gaps.min())
    ratio = gaps / step
    return step if np.mean(np.abs(ratio - np.round(ratio)) < 0.01) >= 0.95 else 0.0  # a few stray values


_ELECTRON_UNITS = frozenset({"electron", "electrons", "e-", "e"})


def _header_gain(header: dict | None, where: str) -> float | None:
    """The header's GAIN in ADU per electron; 1 for a frame whose BUNIT says it is in electrons."""
    header = header or {}
    value = header.get("GAIN")
    if value is None:
        return 1.0 if str(header.get("BUNIT", "")).strip().lower() in _ELECTRON_UNITS else None
    try:
        gain = float(str(value).strip())
    except ValueError:
        raise InputError(f"{where}: header keyword GAIN = {value!r} is not a number") from None
    if not (math.isfinite(gain) and gain > 0):
        raise InputError(f"{where}: header keyword GAIN = {value!r} is not a positive gain in ADU per electron")
    return gain


def _calibrate_with_gain(image: np.ndarray, usable: np.ndarray, gain: float, method: str, base: dict,
                         reason: str) -> Calibration:
    """A frame that does not resolve electrons: pedestal, row pedestals and noise from the robust
    (median, MAD) estimates, those :func:`framescale.frame_scale` gives it."""
    pedestal, rows, sigma = robust_levels(image)
    n = max(min(int(usable.sum()), 262_144), 1)  # pedestal_noise samples at most this many pixels
    return Calibration(
        **base, gain_adu_per_e=float(gain), gain_err=0.0, noise_e=sigma / gain,
        noise_err=1.166 * sigma / gain / math.sqrt(n),  # σ of a MAD-based σ estimate
        dark_current_e_per_px=math.nan, dark_err=math.nan, pedestal_adu=pedestal,
        pedestal_err=1.2533 * sigma / math.sqrt(n),  # σ of a median
        method=method, row_pedestal_adu=pedestal + rows.astype(np.float64), fit={"unresolved": reason},
    )


def calibrate_file(path: str | Path, *, gain: float | None = None,
                   calibrations: list[Calibration] | None = None) -> list[Calibration]:
    """One calibration per image of a frame file (per FITS extension); ``calibrations`` from a previous file."""
    from .io import read_frames

    path = Path(path)
    return [
        calibrate_frame(
            frame.data, frame=path.name, hdu=frame.hdu, extname=frame.extname, header=frame.header, gain=gain,
            previous=find_calibration(calibrations, path.name, frame.hdu, frame.extname),
        )
        for frame in read_frames(path)
    ]


def calibration_table(calibrations: list[Calibration]) -> str:
    """A plain-text table, one line per amplifier: gain, noise, dark current, pedestal and method."""
    header = (f"{'frame':<28} {'hdu':>3} {'gain ADU/e-':>18} {'noise e-':>16} {'dark e-/px':>20} "
              f"{'pedestal ADU':>13} method")
    lines = [header]
    for cal in calibrations:
        name = cal.frame if cal.extname is None else f"{cal.frame}[{cal.extname}]"
        dark = f"{cal.dark_current_e_per_px:.4g} ± {cal.dark_err:.2g}" if math.isfinite(cal.dark_current_e_per_px) else "-"
        lines.append(
            f"{name:<28} {cal.hdu:>3} {f'{cal.gain_adu_per_e:.4f} ± {cal.gain_err:.2g}':>18} "
            f"{f'{cal.noise_e:.4f} ± {cal.noise_err:.2g}':>16} {dark:>20} {cal.pedestal_adu:>13.2f} {cal.method}"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the figure


def plot_calibration(cal: Calibration, image: np.ndarray, path: str | Path, exclude: np.ndarray | None = None) -> Path:
    """The fit as a PNG: pixel histogram (log y) with the fitted comb, pulls, λ by band of rows.

    Without resolved peaks: the histogram about the pedestal with the Gaussian of the measured
    noise, pulls, and the row pedestal along the readout. The pixels are chosen as the fit chose
    them (rows aligned on their pedestals, bright pixels and hot lines left out) from ``image`` and
    ``exclude`` as given to :func:`calibrate_frame`.
    """
    import matplotlib
    from matplotlib.figure import Figure

    from .report import _STYLE, _save_figure

    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != cal.row_pedestal_adu.size:
        raise InputError(f"{cal.frame}: image of shape {array.shape} does not match its calibration's "
                         f"{cal.row_pedestal_adu.size} rows")
    usable = np.ones(array.shape, bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    aligned = array - (cal.row_pedestal_adu - cal.pedestal_adu)[:, None].astype(np.float32)
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(15, 7.5), layout="constrained")
        grid = figure.add_gridspec(2, 2, height_ratios=(3, 1), width_ratios=(3, 2))
        histogram = figure.add_subplot(grid[0, 0])
        pulls = figure.add_subplot(grid[1, 0], sharex=histogram)
        rows = figure.add_subplot(grid[:, 1])
        if cal.resolves_electrons:
            _draw_comb(cal, aligned, usable, histogram, pulls, rows)
        else:
            _draw_gaussian(cal, aligned, usable, histogram, pulls, rows)
        where = cal.frame if cal.extname is None else f"{cal.frame} [{cal.extname}]"
        figure.suptitle(f"{where}: calibration from {_METHOD_WORDS[cal.method]}")
        return _save_figure(figure, Path(path))


_METHOD_WORDS = {
    "peaks": "its electron peaks",
    "given": "the gain given (--gain)",
    "header": "the header's GAIN keyword",
    "file": "a calibration file",
}


def _draw_comb(cal: Calibration, aligned: np.ndarray, usable: np.ndarray, histogram, pulls, rows) -> None:
    fit = cal.fit
    (r0, r1), (c0, c1) = fit.get("active_region", [[0, aligned.shape[0]], [0, aligned.shape[1]]])
    active = np.zeros(aligned.shape, bool)
    active[r0:r1, c0:c1] = True
    peaks = int(fit.get("peaks", 4)) - 1
    lams = np.array([b["dark_current_e_per_px"] for b in cal.dark_bands] or [cal.dark_current_e_per_px])
    comb = _Comb(mu0=cal.pedestal_adu, gain=cal.gain_adu_per_e, sigma=cal.noise_e, lams=lams, lam_errs=lams * 0,
                 lam=cal.dark_current_e_per_px, pixels=0, errors={}, edges=np.zeros(2), peaks=peaks, valid=True,
                 chi2=0.0, ndof=0)  # what the bright-pixel and hot-line cut needs, as the fit left it
    keep = usable & active & ~_charge_outside_the_dark_current(aligned, usable & active, comb)
    lo, hi = fit.get("range_adu", [cal.pedestal_adu - _LOW_SIGMAS * cal.noise_adu,
                                   cal.pedestal_adu + (peaks + 0.5) * cal.gain_adu_per_e])
    edges = np.linspace(lo, hi, int(fit.get("bins", 200)) + 1)
    bands = [(b["row_start"], b["row_stop"]) for b in cal.dark_bands] or [(r0, r1)]
    counts = np.stack([np.histogram(v, edges)[0] for v in _grouped(aligned, keep, bands)]).astype(np.float64)
    smear = float(fit.get("row_shift_rounding_adu", 0.0)) ** 2
    expected = _expected_counts(counts.sum(axis=1), edges, peaks, cal.pedestal_adu, cal.gain_adu_per_e,
                                cal.noise_e, lams, smear).sum(axis=0)
    observed = counts.sum(axis=0)
    centres = (edges[:-1] + edges[1:]) / 2
    histogram.stairs(observed, edges, color="0.25", label=f"pixels ({int(observed.sum()):,} fitted)")
    fine = np.linspace(lo, hi, 2000)
    fine_edges = np.concatenate(([fine[0]], (fine[:-1] + fine[1:]) / 2, [fine[-1]]))
    scale = (edges[1] - edges[0]) / np.diff(fine_edges)
    smooth = _expected_counts(counts.sum(axis=1), fine_edges, peaks, cal.pedestal_adu, cal.gain_adu_per_e,
                              cal.noise_e, lams, smear).sum(axis=0) * scale
    chi2 = f"χ²/ndof = {fit.get('chi2', float('nan')):.0f}/{fit.get('ndof', 0)}"
    histogram.plot(fine, smooth, color="tab:red", lw=1.5, label="\n".join([
        "Σₖ Poisson(k; λ)·Gauss(μ₀ + k·g, σ·g)",
        f"g = {_pm(cal.gain_adu_per_e, cal.gain_err, 'ADU/e⁻')}",
        f"σ = {_pm(cal.noise_e, cal.noise_err, 'e⁻')}",
        f"λ = {_pm(cal.dark_current_e_per_px, cal.dark_err, 'e⁻/px')}",
        f"μ₀ = {_pm(cal.pedestal_adu, cal.pedestal_err, 'ADU')}",
        chi2,
    ]))
    histogram.set_yscale("log")
    histogram.set_ylim(0.5, max(observed.max(), 1) * 3)
    histogram.set_ylabel(f"pixels per {edges[1] - edges[0]:.3g} ADU")
    histogram.legend(loc="upper right", fontsize=11)
    histogram.tick_params(labelbottom=False)
    electrons = histogram.secondary_xaxis(
        "top", functions=(lambda x: (x - cal.pedestal_adu) / cal.gain_adu_per_e,
                          lambda e: cal.pedestal_adu + e * cal.gain_adu_per_e))
    electrons.set_xlabel("charge [e⁻]")
    _draw_pulls(pulls, centres, observed, expected, "pixel value, rows aligned on their pedestal [ADU]")
    starts = np.array([b["row_start"] for b in cal.dark_bands], float)
    stops = np.array([b["row_stop"] for b in cal.dark_bands], float)
    errors = np.array([b["dark_err"] for b in cal.dark_bands], float)
    rows.errorbar((starts + stops) / 2, lams, xerr=(stops - starts) / 2, yerr=errors, fmt="o", color="tab:blue",
                  capsize=3, label="λ per band of rows (±1σ)")
    rows.axhline(cal.dark_current_e_per_px, color="tab:red", lw=1,
                 label=f"whole frame: {_pm(cal.dark_current_e_per_px, cal.dark_err, 'e⁻/px')}")
    rows.axhspan(cal.dark_current_e_per_px - cal.dark_err, cal.dark_current_e_per_px + cal.dark_err,
                 color="tab:red", alpha=0.15)
    rows.set_xlabel("row (readout order)")
    rows.set_ylabel("dark current λ [e⁻/pixel]")
    rows.set_title("dark current along the readout")
    rows.legend(loc="best", fontsize=11)


def _draw_gaussian(cal: Calibration, aligned: np.ndarray, usable: np.ndarray, histogram, pulls, rows) -> None:
    from scipy.special import ndtr

    sigma = cal.noise_adu
    edges = np.linspace(cal.pedestal_adu - 5 * sigma, cal.pedestal_adu + 5 * sigma, 101)
    observed = np.histogram(aligned[usable], edges)[0].astype(np.float64)
    cdf = ndtr((edges - cal.pedestal_adu) / sigma)
    expected = np.diff(cdf) * observed.sum() / max(cdf[-1] - cdf[0], 1e-12)
    centres = (edges[:-1] + edges[1:]) / 2
    histogram.stairs(observed, edges, color="0.25", label="pixels")
    histogram.plot(centres, expected, color="tab:red", label="\n".join([
        "Gauss(pedestal, σ) from median and MAD",
        f"pedestal = {_pm(cal.pedestal_adu, cal.pedestal_err, 'ADU')}",
        f"σ = {_pm(cal.noise_e, cal.noise_err, 'e⁻')} ({sigma:.3g} ADU)",
        f"g = {cal.gain_adu_per_e:.4g} ADU/e⁻ ({cal.method})",
    ]))
    histogram.set_yscale("log")
    histogram.set_ylim(0.5, max(observed.max(), 1) * 3)
    histogram.set_ylabel(f"pixels per {edges[1] - edges[0]:.3g} ADU")
    histogram.legend(loc="upper right", fontsize=11)
    histogram.tick_params(labelbottom=False)
    reason = cal.fit.get("unresolved")
    if reason:
        histogram.set_title(f"electron peaks not used: {reason}", fontsize=12)
    _draw_pulls(pulls, centres, observed, expected, "pixel value, rows aligned on their pedestal [ADU]")
    rows.plot(np.arange(cal.row_pedestal_adu.size), cal.row_pedestal_adu, color="tab:blue", lw=1)
    rows.set_xlabel("row (readout order)")
    rows.set_ylabel("row pedestal [ADU]")
    rows.set_title("pedestal along the readout")


def _draw_pulls(axes, centres: np.ndarray, observed: np.ndarray, expected: np.ndarray, xlabel: str) -> None:
    shown = expected > 0.5
    pull = (observed[shown] - expected[shown]) / np.sqrt(expected[shown])
    axes.axhline(0, color="0.5", lw=0.8)
    axes.plot(centres[shown], pull, ".", color="0.2", ms=3)
    axes.set_ylabel("(n − μ)/√μ")
    axes.set_xlabel(xlabel)
    limit = max(3.0, float(np.nanmax(np.abs(pull))) if pull.size else 3.0)
    axes.set_ylim(-limit * 1.1, limit * 1.1)
