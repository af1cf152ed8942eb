"""Robust pedestal and noise estimates of a CCD frame.

Almost every pixel of a dark-matter CCD frame is pedestal + read noise; clusters and defects are
rare, so the median and the median absolute deviation (MAD) see through them. The auto-labeler
and the network's input normalisation both use these estimates, so they agree on what "σ" means.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

MAD_TO_SIGMA = 1.4826
"""MAD of a Gaussian times this is its σ."""

_MAX_SAMPLES = 1_000_000


def _finite_sample(values: np.ndarray) -> np.ndarray:
    """Finite values, strided down to about a million: enough for a median, fast on 6k² frames."""
    flat = np.asarray(values).ravel()
    step = max(1, flat.size // _MAX_SAMPLES)
    sample = flat[::step].astype(np.float64)
    return sample[np.isfinite(sample)]


def pedestal_noise(image: np.ndarray) -> tuple[float, float]:
    """Pedestal (median) and read noise σ (1.4826 · MAD) of a frame.

    A frame whose MAD is zero (constant, or quantised to a few levels) falls back to the
    standard deviation, and to 1 if that is zero too, so callers can always divide by σ.
    """
    sample = _finite_sample(image)
    if sample.size == 0:
        return 0.0, 1.0
    pedestal = float(np.median(sample))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(sample - pedestal)))
    if sigma <= 0:
        sigma = float(np.std(sample))
    if sigma <= 0:
        sigma = 1.0
    return pedestal, sigma


def row_pedestals(image: np.ndarray) -> np.ndarray:
    """Median of each row: follows a pedestal that drifts along the readout (one value per row)."""
    rows = np.asarray(image, dtype=np.float32)
    with np.errstate(all="ignore"):
        medians = np.nanmedian(np.where(np.isfinite(rows), rows, np.nan), axis=1)
    return np.nan_to_num(medians, nan=0.0).astype(np.float32)


def display_range(image: np.ndarray) -> tuple[float, float]:
    """0.5–99.5 percentile limits for showing a frame: a few glitch pixels of 1e7 ADU must not
    wash it out. A constant frame still gets a valid (non-empty) range."""
    step = max(1, max(image.shape[:2]) // 2048)
    sample = np.asarray(image)[::step, ::step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    return (low, high) if high > low else (low, low + 1.0)


def check_finite(image: np.ndarray, name: str) -> None:
    """Refuse NaN/inf pixels, naming the frame: they break pedestal and noise estimates, and
    patching them silently would hide a bad file."""
    array = np.asarray(image)
    if not np.issubdtype(array.dtype, np.inexact):
        return
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(f"{name}: {bad} pixel(s) are NaN or infinite, out of {array.size}; mask or replace them first")
