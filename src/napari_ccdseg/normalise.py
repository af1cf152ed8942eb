"""Network input normalisation, applied identically in training and prediction.

The method name and its parameters (:func:`normalisation_params`) are written into the model
file, so prediction feeds a model exactly what it was trained on. ``sigma`` puts a CCD frame in
units of read noise above the pedestal, which makes one model serve detectors with different
gains, pedestals and noise levels; ``unit`` keeps colour-rendered PNGs (the original project's
data) as they were drawn.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .io import is_colour, monochrome
from .framescale import FrameScale, frame_scale, robust_scale
from .noise import check_finite

NORMALISATIONS = ("sigma", "unit")
SCALES = ("frame", "robust")
"""Where ``sigma`` takes pedestal and σ: :func:`framescale.frame_scale`, or always the median/MAD."""
INPUT_CHANNELS = 1
"""Both methods give one monochrome channel: the network's ``in_channels``."""

DEFAULT_CLIP = 10.0
"""``sigma``: linear up to ±10 σ, where the auto-labeler's thresholds live; compressed beyond."""


def choose_normalisation(image: np.ndarray) -> str:
    """``unit`` for colour images and 8-bit data (rendered PNGs), ``sigma`` for CCD frames."""
    image = np.asarray(image)
    if is_colour(image) or image.dtype == np.uint8:
        return "unit"
    return "sigma"


def normalisation_params(
    method: str, *, clip: float = DEFAULT_CLIP, scale: str = "robust", dark_as_noise: bool = False
) -> dict:
    """The parameters ``method`` uses, checked and complete, for the model file.

    ``normalise(image, method, **params)`` then replays training's normalisation exactly, even
    if a later release changes the defaults. ``scale`` defaults to ``robust`` and
    ``dark_as_noise`` to off because that is what a model file recording neither was trained
    with; training passes ``frame`` and on (``dark_as_noise`` is recorded only when on).
    """
    _check_method(method)
    _check_clip(clip)
    _check_scale(scale)
    if not isinstance(dark_as_noise, bool):
        raise InputError(f"normalisation dark_as_noise must be true or false, got {dark_as_noise!r}")
    if method != "sigma":
        return {}
    return {"clip": float(clip), "scale": scale, **({"dark_as_noise": True} if dark_as_noise else {})}


def normalise(
    image: np.ndarray, method: str, *, clip: float = DEFAULT_CLIP, scale: str = "frame",
    dark_as_noise: bool = False, source: str = "image", known: FrameScale | None = None,
) -> np.ndarray:
    """Float32 ``(H, W)`` network input from a 2-D frame or an RGB(A) image; never modifies it.

    ``source`` names the file or layer in error messages. Normalise whole frames (one amplifier
    at a time), never tiles: the pedestal and noise estimates need the full frame. ``scale``
    (``sigma`` only): ``frame`` takes pedestal and σ from :func:`framescale.frame_scale`;
    ``robust`` always from the median and MAD, as models saved before frame_scale were trained
    (the two differ only on frames that resolve electrons). ``dark_as_noise``: on a frame that
    resolves electrons and holds more than :data:`framescale.DENSE_DARK_E` of dark current
    (:attr:`FrameScale.dense_dark_current`), each row in units of its background spread √(σ² + λ)
    above its mean background, whatever ``scale`` says (:meth:`FrameScale.above_background`): at
    0.3–2 e⁻/px every dark-current electron would otherwise be a 6 σ hit, which a network reads as
    glow. ``known``: the frame's scale (:func:`framescale.frame_scale`) when the caller has
    measured it already; used instead of measuring again (by ``robust`` only when it is the robust one).
    """
    _check_method(method)
    image = np.asarray(image)
    plane = monochrome(image, source)
    check_finite(plane, source)
    if method == "unit":
        return _unit(plane, image.dtype)
    _check_clip(clip)
    _check_scale(scale)
    return _sigma(plane, clip, scale, known, dark_as_noise)


def _check_method(method: str) -> None:
    if method not in NORMALISATIONS:
        raise InputError(
            f"unknown normalisation {method!r}: choose one of {', '.join(NORMALISATIONS)}"
        )


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise InputError(f"unknown normalisation scale {scale!r}: choose one of {', '.join(SCALES)}")


def _check_clip(clip: float) -> None:
    if not (np.isfinite(clip) and clip > 0):
        raise InputError(f"normalisation clip must be a positive number of σ, got {clip}")


def _unit(plane: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Scale to [0, 1]: by the integer type's maximum (255 for PNGs), or as already-unit floats."""
    if np.issubdtype(dtype, np.integer):
        scale = float(np.iinfo(dtype).max)
    else:
        scale = 255.0 if plane.max() > 1.0 else 1.0  # float RGB from e.g. matplotlib is in [0, 1]
    unit = (plane / scale).astype(np.float32, copy=False)
    return np.clip(unit, 0.0, 1.0, out=unit)


def _sigma(plane: np.ndarray, clip: float, scale: str = "frame", known: FrameScale | None = None,
           dark_as_noise: bool = False) -> np.ndarray:
    """Pixels in σ above the row pedestal, compressed logarithmically beyond ``clip`` σ.

    Pedestal and σ come from :func:`framescale.frame_scale`: the zero-electron peak of each row
    and its width where the frame resolves electrons, else the robust row pedestals and MAD
    (measured after removing them, so a drifting baseline does not inflate σ). Invariant to gain
    and pedestal (``a·x + b``, a > 0). ``scale="robust"`` skips the electron comb.
    """
    if dark_as_noise and known is None:
        known = frame_scale(plane)  # measured once for both uses below
    if dark_as_noise and known.dense_dark_current:
        return soft_clip(known.above_background(plane), clip)
    if scale == "robust":
        found = known if known is not None and not known.resolves_electrons else robust_scale(plane)
    else:
        found = known if known is not None else frame_scale(plane)
    z = found.above_pedestal(plane)
    z /= np.float32(found.noise_adu)
    return soft_clip(z, clip)


def soft_clip(z: np.ndarray, clip: float) -> np.ndarray:
    """Identity within ±clip, then ``clip·(1 + ln(1 + (|z| − clip)/clip))``: smooth, monotonic.

    Glitches of 10⁷ ADU or 20 keV clusters at 0.16 e⁻ noise land near 10² instead of 10⁸, so they
    cannot dominate the network's activations, while their ordering is kept. Works in place.
    """
    magnitude = np.abs(z)
    beyond = magnitude > clip
    excess = magnitude[beyond] - clip
    z[beyond] = np.sign(z[beyond]) * clip * (1.0 + np.log1p(excess / clip))
    return z
