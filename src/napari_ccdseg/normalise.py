"""Network input normalisation, applied identically in training and prediction.

The method and its parameters are written into the model file (see :func:`normalisation_record`)
so prediction feeds a model exactly what it was trained on. ``sigma`` puts a CCD frame in units of
read noise above the pedestal, which makes one model serve detectors with different gains,
pedestals and noise levels; ``unit`` keeps colour-rendered PNGs (the original project's data) as
they were drawn.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .noise import pedestal_noise, row_pedestals

NORMALISATIONS = ("sigma", "unit")
INPUT_CHANNELS = 1
"""Both methods give one monochrome channel: the network's ``in_channels``."""

DEFAULT_CLIP = 10.0
"""``sigma``: linear up to ±10 σ, where the auto-labeler's thresholds live; compressed beyond."""


def choose_normalisation(image: np.ndarray) -> str:
    """``unit`` for colour images and 8-bit data (rendered PNGs), ``sigma`` for CCD frames."""
    image = np.asarray(image)
    if _is_colour(image) or image.dtype == np.uint8:
        return "unit"
    return "sigma"


def normalisation_record(method: str, *, clip: float = DEFAULT_CLIP) -> dict:
    """What goes into the model file; ``normalise(image, **record)`` replays it exactly."""
    _check_method(method)
    if method == "unit":
        return {"method": "unit"}
    return {"method": "sigma", "clip": float(clip)}


def normalise(
    image: np.ndarray, method: str, *, clip: float = DEFAULT_CLIP, source: str = "image"
) -> np.ndarray:
    """Float32 ``(H, W)`` network input from a 2-D frame or an RGB(A) image.

    ``source`` names the file or layer in error messages. Normalise whole frames (one amplifier
    at a time), never tiles: the pedestal and noise estimates need the full frame.
    """
    _check_method(method)
    mono = _monochrome(np.asarray(image), source)
    if method == "unit":
        return _unit(mono, np.asarray(image).dtype)
    return _sigma(mono, clip)


def _check_method(method: str) -> None:
    if method not in NORMALISATIONS:
        raise InputError(f"unknown normalisation {method!r}: choose one of {', '.join(NORMALISATIONS)}")


def _is_colour(image: np.ndarray) -> bool:
    return image.ndim == 3 and image.shape[-1] in (3, 4)


def _monochrome(image: np.ndarray, source: str) -> np.ndarray:
    """2-D float32 copy: RGB channels averaged and alpha dropped; NaN and inf refused."""
    if _is_colour(image):
        mono = image[..., :3].astype(np.float32).mean(axis=-1, dtype=np.float32)
    elif image.ndim == 2:
        mono = image.astype(np.float32)  # always a copy: later steps work in place
    else:
        raise InputError(
            f"{source}: expected a 2-D frame or an RGB(A) image, got an array of shape {image.shape}"
        )
    if mono.size == 0:
        raise InputError(f"{source}: the image is empty (shape {image.shape})")
    bad = int(np.count_nonzero(~np.isfinite(mono)))
    if bad:
        raise InputError(f"{source}: {bad} pixel(s) are NaN or infinite; mask or replace them first")
    return mono


def _unit(mono: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Scale to [0, 1]: by the integer type's maximum (255 for PNGs), or as already-unit floats."""
    if np.issubdtype(dtype, np.integer):
        scale = float(np.iinfo(dtype).max)
    else:
        scale = 255.0 if mono.max() > 1.0 else 1.0  # float RGB from e.g. matplotlib is in [0, 1]
    mono /= scale
    return np.clip(mono, 0.0, 1.0, out=mono)


def _sigma(mono: np.ndarray, clip: float) -> np.ndarray:
    """Pixels in σ above the row pedestal, compressed logarithmically beyond ``clip`` σ.

    Per-row pedestals follow baselines that drift along the readout; σ is measured after removing
    them so the drift does not inflate it. Invariant to gain and pedestal (``a·x + b``, a > 0).
    """
    mono -= row_pedestals(mono)[:, None]
    _, sigma = pedestal_noise(mono)
    mono /= np.float32(sigma)
    return soft_clip(mono, clip)


def soft_clip(z: np.ndarray, clip: float) -> np.ndarray:
    """Identity within ±clip, then ``clip·(1 + ln(1 + (|z| − clip)/clip))``: smooth, monotonic.

    Glitches of 10⁷ ADU or 20 keV clusters at 0.16 e⁻ noise land near 10²instead of 10⁸, so they
    cannot dominate the network's activations, while their ordering is kept. Works in place.
    """
    magnitude = np.abs(z)
    beyond = magnitude > clip
    excess = magnitude[beyond] - clip
    z[beyond] = np.sign(z[beyond]) * clip * (1.0 + np.log1p(excess / clip))
    return z
