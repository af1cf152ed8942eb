"""Analysis masks and the single-electron rate: what a low-energy dark-matter search needs from a frame.

Skipper-CCD searches (SENSEI, DAMIC-M, Oscura) do not search *in* the clusters: they mask every
cluster, its halo and every detector defect, then count the pixels holding 1, 2, 3 … electrons in
what is left. :func:`build_mask` makes that mask as a uint16 bitfield (one bit per reason, listed
with their rules in :data:`BITS`; a pixel is usable when its value is 0) from a frame, its class map
(a model's prediction, the ``physical`` preset or a map corrected by hand) and its
:class:`~napari_ccdseg.calibrate.Calibration`. :func:`rates` measures the single-electron rate λ in
the unmasked pixels by a fit of their charge histogram with the Gauss ⊗ Poisson comb.

Directions (as in :mod:`napari_ccdseg.simulate`): row 0 is read first and column 0 of each row is
read first, so charge left behind by transfer inefficiency lands in *later-read* pixels: serial CTI
in larger column indices of the same row, parallel CTI in larger row indices of the same column.

Every rule and number is explained in docs/masks.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi
from scipy import special, stats

from .classes import CLUSTER, GLOWING, HOT_PIXEL
from .errors import InputError
from .metrics import cluster_instances

if TYPE_CHECKING:
    from .calibrate import Calibration


@dataclass(frozen=True)
class Bit:
    """One reason to mask a pixel: its name, its value in the bitfield and the rule that sets it."""

    name: str
    value: int
    rule: str


BITS: tuple[Bit, ...] = (
    Bit("cluster", 1 << 0, "pixel of a cluster of the class map (cluster class, 8-connected) holding at least "
        "cluster_min_e electrons; fainter ones are what the search counts, and dark-current electrons that "
        "happen to touch"),
    Bit("halo", 1 << 1, "within r = halo_px + halo_px_per_decade · log10(Q / halo_q0_e) pixels of a "
        "cluster of charge Q (Q below halo_q0_e: r = halo_px); charge diffused beyond the cluster's pixels"),
    Bit("bleed", 1 << 2, "up to bleed_px pixels after a cluster of at least bleed_min_e electrons along its "
        "rows (serial CTI: larger column index) and parallel_bleed_px along its columns (parallel CTI: "
        "larger row index)"),
    Bit("hot_pixel", 1 << 3, "pixel of the class map's hot-pixel class"),
    Bit("hot_column", 1 << 4, "column whose charge in 1–10 e⁻ pixels exceeds its neighbouring columns' "
        "by more than excess_sigma (one-sided Poisson)"),
    Bit("glowing", 1 << 5, "pixel of the class map's glowing class, or in the centre block of a window of "
        "excess_windows_blocks blocks of excess_block_px pixels whose charge in 1–10 e⁻ pixels exceeds the "
        "rate of its rows by more than excess_sigma: the faint tail of amplifier glow that no class map labels"),
    Bit("serial_row", 1 << 6, "row holding a serial-register event: a cluster one row high and at least "
        "serial_min_length pixels long, or charge in 1–10 e⁻ pixels exceeding the neighbouring rows' by "
        "more than excess_sigma"),
    Bit("edge", 1 << 7, "outside the active area (prescan, overscan columns, overscan rows), or within "
        "edge_px of its border"),
    Bit("saturated", 1 << 8, "pixel at or above the saturation level (ADU): the setting, the header's SATURATE, "
        "or a plateau of at least three pixels at the frame's top (full well or the ADC's full scale)"),
)
"""Every bit of the mask, in bit order; docs/masks.md explains each one."""

MASK_BITS: dict[str, int] = {bit.name: bit.value for bit in BITS}
"""Bit name -> bit value; a pixel's mask value is the sum of the bits set on it."""

EXCESS_MAX_E = 10
"""Pixels holding 1 … this many electrons count towards the excess tests (brighter ones are hits)."""


@dataclass
class MaskParams:
    """Every setting of :func:`build_mask`; the defaults are explained in docs/masks.md."""

    cluster_min_e: float = 5.0
    halo_px: float = 2.0
    halo_px_per_decade: float = 3.0
    halo_q0_e: float = 10.0
    bleed_px: int = 10
    parallel_bleed_px: int = 2
    bleed_min_e: float = 100.0
    edge_px: int = 2
    excess_sigma: float = 5.0
    excess_block_px: int = 8
    """Side of the blocks the window test sums pixels in (a 4096² frame has 262 144 of them)."""
    excess_windows_blocks: tuple[int, ...] = (5, 17)
    """Window sides in blocks, odd: 40 and 136 pixels with 8-pixel blocks."""
    line_window: int = 16
    """Neighbouring lines on each side a column or row is compared with."""
    reference_degree: int = 2
    """Degree of the polynomial in the row index fitted to the rows' rates that a window is compared
    with: dark current grows along the readout (linearly with the time a row waits)."""
    serial_min_length: int = 10
    saturation_adu: float | None = None

    def __post_init__(self) -> None:
        def bad(message: str) -> None:
            raise InputError(f"mask settings: {message}")

        for name in ("cluster_min_e", "halo_px", "halo_px_per_decade", "bleed_min_e"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                bad(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if not self.halo_q0_e > 0:
            bad(f"halo_q0_e must be > 0, got {self.halo_q0_e!r}")
        for name in ("bleed_px", "parallel_bleed_px", "edge_px"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 0:
                bad(f"{name} must be a whole number of pixels >= 0, got {getattr(self, name)!r}")
        if not self.excess_sigma > 0:
            bad(f"excess_sigma must be > 0, got {self.excess_sigma!r}")
        if not self.excess_windows_blocks or any(int(w) != w or w < 1 or w % 2 == 0 for w in self.excess_windows_blocks):
            bad(f"excess_windows_blocks must be odd whole numbers >= 1, got {self.excess_windows_blocks!r}")
        if int(self.reference_degree) != self.reference_degree or not 0 <= self.reference_degree <= 5:
            bad(f"reference_degree must be a whole number from 0 to 5, got {self.reference_degree!r}")
        for name in ("line_window", "serial_min_length", "excess_block_px"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                bad(f"{name} must be a whole number >= 1, got {getattr(self, name)!r}")

    @property
    def excess_p_value(self) -> float:
        """One-sided tail probability of ``excess_sigma`` Gaussian standard deviations."""
        return float(stats.norm.sf(self.excess_sigma))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# ---------------------------------------------------------------- geometry


Region = tuple[tuple[int, int], tuple[int, int]]
"""((row_start, row_stop), (col_start, col_stop)) of the active area, stops exclusive."""


def active_region(shape: tuple[int, int], header: dict | None = None, metadata: dict | None = None) -> Region | None:
    """The active area from a simulated frame's metadata (``active_rows``/``active_cols``) or FITS
    keywords PRESCAN (columns before), OVERSCAN (columns after) and OVERSCNR (rows after); None when
    neither says (the whole image is then taken as active)."""
    rows, cols = shape
    if metadata and "active_rows" in metadata and "active_cols" in metadata:
        (r0, r1), (c0, c1) = metadata["active_rows"], metadata["active_cols"]
        return (int(r0), int(r1)), (int(c0), int(c1))
    header = header or {}
    keys = ("PRESCAN", "OVERSCAN", "OVERSCNR")
    if not any(header.get(k) is not None for k in keys):
        return None
    try:
        pre, over, over_rows = (int(float(header.get(k) or 0)) for k in keys)
    except (TypeError, ValueError):
        raise InputError(f"header keywords {', '.join(keys)} must be numbers, got "
                         f"{[header.get(k) for k in keys]}") from None
    if pre < 0 or over < 0 or over_rows < 0 or pre + over >= cols or over_rows >= rows:
        raise InputError(f"header keywords PRESCAN={pre}, OVERSCAN={over}, OVERSCNR={over_rows} leave no "
                         f"active area in a {rows}×{cols} image")
    return (0, rows - over_rows), (pre, cols - over)


def frame_region(frame_path: str | Path, stem: str, shape: tuple[int, int], header: dict | None) -> Region | None:
    """:func:`active_region` of a frame file: the simulator's ``<stem>_meta.json`` beside it when there
    is one, else the header's keywords."""
    meta_path = Path(frame_path).with_name(f"{stem}_meta.json")
    metadata = None
    if meta_path.is_file():
        try:
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"{meta_path}: cannot read the frame's metadata ({error})") from None
    return active_region(shape, header, metadata if isinstance(metadata, dict) else None)


def _edge_mask(shape: tuple[int, int], region: Region | None, edge_px: int) -> np.ndarray:
    (r0, r1), (c0, c1) = region if region is not None else ((0, shape[0]), (0, shape[1]))
    inner = np.zeros(shape, dtype=bool)
    inner[r0 + edge_px : max(r1 - edge_px, r0 + edge_px), c0 + edge_px : max(c1 - edge_px, c0 + edge_px)] = True
    return ~inner


def saturation_level(image: np.ndarray, header: dict | None, params: MaskParams, noise_adu: float) -> float | None:
    """Saturation in ADU: the setting, else the header's SATURATE, else a plateau at the top of the
    frame: at least three pixels within 6 σ of its maximum, 100 σ above the median (an ADC's
    full-scale code, or a full well read with noise); the level is then the plateau's median − 4 σ."""
    if params.saturation_adu is not None:
        return float(params.saturation_adu)
    if header and header.get("SATURATE") is not None:
        try:
            return float(header["SATURATE"])
        except (TypeError, ValueError):
            raise InputError(f"header keyword SATURATE = {header['SATURATE']!r} is not a number") from None
    top = float(np.max(image))
    plateau = image[image >= top - 6 * noise_adu]
    if plateau.size >= 3 and top - float(np.median(image)) > 100 * noise_adu:
        return float(np.median(plateau)) - 4 * noise_adu
    return None


# ---------------------------------------------------------------- cluster bits


def _cluster_charges(electrons: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Charge (e⁻) of every instance 1..N, index 0 unused."""
    return np.bincount(instances.ravel(), weights=electrons.ravel().astype(np.float64), minlength=1)


def halo_radius(charge_e: np.ndarray | float, params: MaskParams) -> np.ndarray:
    """Halo radius (pixels) of clusters of ``charge_e`` electrons: grows by halo_px_per_decade per decade."""
    q = np.maximum(np.asarray(charge_e, dtype=np.float64), params.halo_q0_e)
    return params.halo_px + params.halo_px_per_decade * np.log10(q / params.halo_q0_e)


def _halo(instances: np.ndarray, charges: np.ndarray, params: MaskParams) -> np.ndarray:
    """Pixels within each cluster's halo radius (Euclidean, from the nearest pixel of that cluster)."""
    halo = np.zeros(instances.shape, dtype=bool)
    radii = halo_radius(charges, params)
    for index, box in enumerate(ndi.find_objects(instances), start=1):
        if box is None:
            continue
        reach = int(math.floor(radii[index]))
        if reach < 1:
            continue
        grown = tuple(
            slice(max(s.start - reach, 0), min(s.stop + reach, n)) for s, n in zip(box, instances.shape)
        )
        outside = instances[grown] != index
        halo[grown] |= ndi.distance_transform_edt(outside) <= radii[index]
    return halo


def _trail(source: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Pixels up to ``length`` after a True pixel of ``source`` along ``axis`` (towards larger index)."""
    if length <= 0:
        return np.zeros_like(source)
    index = np.arange(source.shape[axis]).reshape((-1, 1) if axis == 0 else (1, -1))
    last = np.maximum.accumulate(np.where(source, index, -length - 1), axis=axis)
    return (index - last >= 1) & (index - last <= length)


def _flat_cluster_rows(instances: np.ndarray, min_length: int) -> np.ndarray:
    """Rows holding a cluster one row high and at least ``min_length`` columns long (serial-register hit)."""
    rows = np.zeros(instances.shape[0], dtype=bool)
    for box in ndi.find_objects(instances):
        if box is not None and box[0].stop - box[0].start == 1 and box[1].stop - box[1].start >= min_length:
            rows[box[0].start] = True
    return rows


# ---------------------------------------------------------------- excess tests


def electron_count(electrons: np.ndarray) -> np.ndarray:
    """Electrons k a pixel holds by the rounding rule k − 0.5 ≤ q < k + 0.5 (q in e⁻)."""
    return np.floor(np.asarray(electrons, dtype=np.float64) + 0.5)


def excess_charge(electrons: np.ndarray) -> np.ndarray:
    """Charge counted by the excess tests: k e⁻ for pixels holding k = 1 … EXCESS_MAX_E, else 0."""
    k = electron_count(electrons)
    return np.where((k >= 1) & (k <= EXCESS_MAX_E), k, 0.0)


def _poisson_excess(observed: np.ndarray, expected: np.ndarray, p_value: float) -> np.ndarray:
    """True where P(X ≥ observed | Poisson(expected)) < p_value (and something was expected).

    The tail is computed only where observed > expected + 3 √expected: below that it is at least
    1.4 · 10⁻³ for any expectation (checked numerically), far above any 3σ-or-stricter cut, and
    the incomplete gamma function is the slow part on a large frame.
    """
    observed = np.rint(np.asarray(observed, dtype=np.float64))
    expected = np.asarray(expected, dtype=np.float64)
    flagged = np.zeros(observed.shape, dtype=bool)
    candidates = (observed >= 1) & (expected > 0) & (observed > expected + 3 * np.sqrt(np.maximum(expected, 0)))
    if candidates.any():
        flagged[candidates] = special.pdtrc(observed[candidates] - 1, expected[candidates]) < p_value
    return flagged


def _line_excess(charge: np.ndarray, usable: np.ndarray, axis: int, params: MaskParams) -> np.ndarray:
    """Lines (axis 0: columns, axis 1: rows) whose charge exceeds their neighbours' rate.

    Each line is compared with the lines up to ``line_window`` away on both sides (itself and lines
    already flagged left out), so a smooth gradient (glow, dark current growing along the readout)
    is not a hot line; flagged lines leave the reference and the test repeats until none is added.
    """
    s = (charge * usable).sum(axis=axis).astype(np.float64)
    a = usable.sum(axis=axis).astype(np.float64)
    flagged = np.zeros(s.shape, dtype=bool)
    kernel = np.ones(2 * params.line_window + 1)
    for _ in range(10):
        keep = ~flagged
        near_s = ndi.convolve1d(s * keep, kernel, mode="constant") - s * keep
        near_a = ndi.convolve1d(a * keep, kernel, mode="constant") - a * keep
        total = max(float(a[keep].sum()), 1.0)
        rate = np.where(near_a > 0, near_s / np.maximum(near_a, 1.0), float((s * keep).sum()) / total)
        new = _poisson_excess(s, rate * a, params.excess_p_value)
        if np.array_equal(new | flagged, flagged):
            break
        flagged |= new
    return flagged


def _row_rate(charge: np.ndarray, usable: np.ndarray, degree: int) -> np.ndarray:
    """Rate (e⁻ per pixel) of each row: a polynomial of ``degree`` in the row index fitted by
    weighted least squares to the rows' rates over their usable pixels (weights: pixel counts)."""
    s = (charge * usable).sum(axis=1, dtype=np.float64)
    a = usable.sum(axis=1).astype(np.float64)
    rows = np.flatnonzero(a > 0)
    if rows.size <= degree:
        overall = float(s.sum()) / max(float(a.sum()), 1.0)
        return np.full(charge.shape[0], overall)
    x = np.arange(charge.shape[0]) / max(charge.shape[0] - 1, 1)  # well-conditioned on [0, 1]
    coefficients = np.polynomial.polynomial.polyfit(x[rows], s[rows] / a[rows], degree, w=np.sqrt(a[rows]))
    return np.maximum(np.polynomial.polynomial.polyval(x, coefficients), 0.0)


def _block_sums(values: np.ndarray, block: int) -> np.ndarray:
    """Sums over block × block tiles (the last row and column of tiles padded with zeros)."""
    rows, cols = values.shape
    padded = np.zeros((-(-rows // block) * block, -(-cols // block) * block), dtype=np.float64)
    padded[:rows, :cols] = values
    return padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block).sum(axis=(1, 3))


REFERENCE_SIGMA = 3.0
"""Windows above this many σ (one-sided Poisson) leave the rate the window test compares with."""


def _blocks_to_pixels(blocks: np.ndarray, block: int, shape: tuple[int, int]) -> np.ndarray:
    return np.repeat(np.repeat(blocks, block, axis=0), block, axis=1)[: shape[0], : shape[1]]


def _region_excess(charge: np.ndarray, usable: np.ndarray, params: MaskParams) -> np.ndarray:
    """Blocks at the centre of square windows whose charge exceeds the rate of their rows (faint glow).

    Pixels are summed in blocks first, and windows of whole blocks are tested around every block:
    the test then costs a few operations per pixel on any frame. It is exact for small counts, so
    windows with few usable pixels (near the frame's edge or a glowing region) are tested too.
    The rate of the rows is fitted without the blocks whose windows exceed a milder cut
    (REFERENCE_SIGMA), and the test repeats until that set stops growing: a glowing corner would
    otherwise raise the rate of its rows, and hide its own tail.
    """
    block = params.excess_block_px
    observed = _block_sums(charge * usable, block)
    flagged = np.zeros(observed.shape, dtype=bool)
    doubtful = np.zeros(observed.shape, dtype=bool)
    reference_p = float(stats.norm.sf(min(REFERENCE_SIGMA, params.excess_sigma)))
    windows = {w: ndi.uniform_filter(observed, w, mode="constant") * w * w for w in params.excess_windows_blocks}
    for _ in range(10):
        rate = _row_rate(charge, usable & ~_blocks_to_pixels(doubtful, block, charge.shape), params.reference_degree)
        expected = _block_sums(usable * rate[:, None], block)
        new_doubtful = np.zeros_like(doubtful)
        for w, window_observed in windows.items():
            window_expected = ndi.uniform_filter(expected, w, mode="constant") * w * w
            flagged |= _poisson_excess(window_observed, window_expected, params.excess_p_value)
            new_doubtful |= _poisson_excess(window_observed, window_expected, reference_p)
        if not (new_doubtful & ~doubtful).any():
            break
        doubtful |= new_doubtful
    return _blocks_to_pixels(flagged, block, charge.shape)


# ---------------------------------------------------------------- the mask


def build_mask(
    image_adu: np.ndarray,
    labels: np.ndarray,
    calibration: Calibration,
    *,
    params: MaskParams | None = None,
    region: Region | None = None,
    header: dict | None = None,
    frame: str = "frame",
) -> np.ndarray:
    """The uint16 mask bitfield of one frame (bits in :data:`BITS`; 0 = pixel usable for rates).

    ``labels`` is the frame's class map; ``region`` its active area (see :func:`active_region`),
    ``header`` the FITS header (SATURATE). Class-map and geometric bits come first; the excess tests
    (hot columns, serial rows, faint glow) then run on the pixels no other bit claims.
    """
    params = params or MaskParams()
    image = np.asarray(image_adu)
    labels = np.asarray(labels)
    if image.ndim != 2 or image.shape != labels.shape:
        raise InputError(f"{frame}: the image ({image.shape}) and class map ({labels.shape}) must be 2-D and alike")
    electrons = calibration.electrons(image)
    bits = {name: np.zeros(image.shape, dtype=bool) for name in MASK_BITS}

    bits["edge"] = _edge_mask(image.shape, region, params.edge_px)
    level = saturation_level(image, header, params, calibration.noise_adu)
    if level is not None:
        bits["saturated"] = image >= level
    instances = cluster_instances(labels)
    charges = _cluster_charges(electrons, instances)
    faint = np.flatnonzero(charges < params.cluster_min_e)
    instances[np.isin(instances, faint[faint > 0])] = 0
    bits["cluster"] = instances > 0
    bits["hot_pixel"] = labels == HOT_PIXEL
    bits["glowing"] = labels == GLOWING
    bits["halo"] = _halo(instances, charges, params) & ~bits["cluster"]
    bright = (charges >= params.bleed_min_e)[instances] & (instances > 0)
    bits["bleed"] = (_trail(bright, params.bleed_px, 1) | _trail(bright, params.parallel_bleed_px, 0)) & ~bits["cluster"]
    serial_rows = _flat_cluster_rows(instances, params.serial_min_length)

    free = ~np.logical_or.reduce([bits[name] for name in bits])
    charge = excess_charge(electrons)
    columns = np.zeros(image.shape[1], dtype=bool)
    rows = serial_rows.copy()
    region_flags = np.zeros(image.shape, dtype=bool)
    for _ in range(5):  # flags only grow: a line found first stays a line though glow is found around it
        before = (columns.copy(), rows.copy(), region_flags.copy())
        columns |= _line_excess(charge, free & ~region_flags & ~rows[:, None], 0, params)
        rows |= _line_excess(charge, free & ~region_flags & ~columns[None, :], 1, params)
        region_flags |= _region_excess(charge, free & ~columns[None, :] & ~rows[:, None], params)
        if all(np.array_equal(a, b) for a, b in zip(before, (columns, rows, region_flags))):
            break
    bits["hot_column"][:, columns] = True
    bits["serial_row"][rows, :] = True
    bits["glowing"] |= region_flags & free

    mask = np.zeros(image.shape, dtype=np.uint16)
    for name, where in bits.items():
        mask[where] |= np.uint16(MASK_BITS[name])
    return mask


def bit_counts(mask: np.ndarray) -> dict[str, int]:
    """Pixels carrying each bit (a pixel may carry several), and ``unmasked`` (no bit)."""
    mask = np.asarray(mask)
    counts = {bit.name: int(np.count_nonzero(mask & bit.value)) for bit in BITS}
    counts["unmasked"] = int(np.count_nonzero(mask == 0))
    return counts


# ---------------------------------------------------------------- the single-electron rate

EXPOSURE_KEYWORDS = ("EXPTIME", "EXPOSURE")
"""FITS keywords read, in this order, for the exposure time in seconds."""
READOUT_KEYWORDS = ("READTIME", "RDTIME")
"""FITS keywords read, in this order, for the readout time of the whole image in seconds."""
SECONDS_PER_DAY = 86400.0
COUNTED_PEAKS = 4
"""Pixels holding 1 … this many electrons are counted in the rate table."""


BAND_MIN_PIXELS = 4000
MAX_BANDS = 16
"""λ is fitted in up to 16 bands of rows holding at least 4000 unmasked pixels each (calibrate's rule):
dark current grows along the readout, and one Poisson λ fitted to a mixture of λs is biased."""


def row_bands(usable: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of up to MAX_BANDS bands of rows of equal height, each of about
    BAND_MIN_PIXELS usable pixels or more, over the rows that have any."""
    rows = np.flatnonzero(np.asarray(usable).any(axis=1))
    if rows.size == 0:
        return []
    first, last = int(rows[0]), int(rows[-1]) + 1
    n = int(np.clip(np.count_nonzero(usable) // BAND_MIN_PIXELS, 1, min(MAX_BANDS, last - first)))
    bounds = np.round(np.linspace(first, last, n + 1)).astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass
class CombFit:
    """Binned maximum-likelihood fit of unmasked pixel charges with the Gauss ⊗ Poisson comb, one λ
    per band of rows: in band b, Σ_k Poisson(k; λ_b) · Gauss(q; offset + k · gain_scale, σ), q in e⁻.

    ``values``/``errors`` hold ``lam`` (the bands' λ weighted by their unmasked pixels), ``sigma``,
    ``offset`` and ``gain_scale``; ``bands`` each band's rows, pixels and λ ± error.
    """

    edges: np.ndarray
    counts: np.ndarray
    """Pixels per bin, all bands together."""
    band_counts: np.ndarray = field(repr=False)
    values: dict[str, float]
    errors: dict[str, float]
    bands: list[dict]
    valid: bool

    def expected(self) -> np.ndarray:
        """Expected pixels per bin of the fitted comb, all bands together."""
        lams = np.array([band["lam"] for band in self.bands])
        shape = _band_shapes(self.edges, lams, self.values["sigma"], self.values["offset"], self.values["gain_scale"])
        return (shape * self.band_counts.sum(axis=1, keepdims=True)).sum(axis=0)


def _band_shapes(edges: np.ndarray, lams: np.ndarray, sigma: float, offset: float, gain_scale: float) -> np.ndarray:
    """(bands, bins) probabilities of each bin given that a pixel lies in the fitted range."""
    k = np.arange(COUNTED_PEAKS + 8)
    weights = stats.poisson.pmf(k[None, :], np.asarray(lams)[:, None])
    cdf = weights @ special.ndtr((edges[:, None] - (offset + k * gain_scale)[None, :]) / sigma).T
    in_range = np.maximum(cdf[:, -1:] - cdf[:, :1], 1e-300)
    return np.diff(cdf, axis=1) / in_range


def fit_comb(charges_e: np.ndarray, noise_e: float, rows: np.ndarray | None = None,
             bands: list[tuple[int, int]] | None = None) -> CombFit:
    """Fit the comb to pixel charges (e⁻) from −0.5 to COUNTED_PEAKS + 0.5 e⁻ in bins of σ/4.

    ``rows`` (each charge's row) and ``bands`` split the pixels into bands of rows, each with its
    own λ; σ, the zero-peak offset and the gain scale (1 = the calibration's gain) are shared and
    free: σ is measured on the unmasked pixels themselves (1 % on σ moves the noise tail past
    0.5 e⁻ by 5 % of λ at 10⁻³ e⁻/px). The likelihood is multinomial within the range in each band,
    so pixels outside it do not matter. Errors are the fit's (Hesse): the Poisson statistics of the
    counts; the combined λ's error comes from the λs' covariance.
    """
    from iminuit import Minuit

    q = np.asarray(charges_e, dtype=np.float64).ravel()
    if rows is None or not bands:
        rows, bands = np.zeros(q.size, dtype=np.int64), [(0, 1)]
    width = float(np.clip(noise_e / 4, 0.005, 0.05))
    edges = np.arange(-0.5, COUNTED_PEAKS + 0.5 + width / 2, width)
    members = [(rows >= start) & (rows < stop) for start, stop in bands]
    counts = np.stack([np.histogram(q[m], edges)[0] for m in members]).astype(np.float64)
    shares = np.array([m.sum() for m in members], dtype=np.float64) / max(q.size, 1)
    k = electron_count(q)
    start_lam = max(float(np.count_nonzero(k == 1)) / max(np.count_nonzero(k == 0), 1), 1e-4)
    names = ["sigma", "offset", "gain_scale", *(f"lam{b}" for b in range(len(bands)))]

    def nll(*p: float) -> float:
        shape = _band_shapes(edges, np.asarray(p[3:]), p[0], p[1], p[2])
        return float(-(counts * np.log(np.maximum(shape, 1e-300))).sum())

    minuit = Minuit(nll, float(noise_e), 0.0, 1.0, *([start_lam] * len(bands)), name=names)
    minuit.errordef = Minuit.LIKELIHOOD
    minuit.limits["sigma"] = (0.02, 1.0)
    minuit.limits["offset"] = (-0.3, 0.3)
    minuit.limits["gain_scale"] = (0.8, 1.2)
    for b in range(len(bands)):
        minuit.limits[f"lam{b}"] = (0.0, 50.0)
    minuit.migrad()
    minuit.hesse()
    lam_names = names[3:]
    lams = np.array([minuit.values[n] for n in lam_names])
    if minuit.covariance is not None:
        covariance = np.array([[minuit.covariance[a, b] for b in lam_names] for a in lam_names])
        lam_err = float(math.sqrt(max(shares @ covariance @ shares, 0.0)))
        errors = {n: float(minuit.errors[n]) for n in names}
    else:  # Hesse failed: no uncertainty to give
        lam_err, errors = math.nan, {n: math.nan for n in names}
    values = {n: float(minuit.values[n]) for n in names[:3]}
    values["lam"] = float(shares @ lams)
    band_rows = [
        {"row_start": start, "row_stop": stop, "unmasked_pixels": int(m.sum()),
         "lam": float(lams[b]), "err": errors[lam_names[b]]}
        for b, ((start, stop), m) in enumerate(zip(bands, members))
    ]
    return CombFit(
        edges=edges, counts=counts.sum(axis=0), band_counts=counts, bands=band_rows,
        values=values, errors={**{n: errors[n] for n in names[:3]}, "lam": lam_err},
        valid=bool(minuit.valid and minuit.covariance is not None),
    )


@dataclass
class Rates:
    """The rate measurement of one frame / amplifier in its unmasked pixels."""

    frame: str
    hdu: int
    extname: str | None
    unmasked_pixels: int
    pixels_by_charge: list[int]
    """Unmasked pixels holding 0, 1, … COUNTED_PEAKS electrons by the rounding rule (see rates())."""
    ser_e_per_px: float
    ser_err: float
    noise_e: float
    misassigned_fraction: float
    """Φ(−0.5 / σ): the share of k-electron pixels the rounding rule counts as k + 1 (and as k − 1)."""
    exposure_s: float | None = None
    readout_s: float | None = None
    mean_time_s: float | None = None
    ser_e_per_px_day: float | None = None
    ser_day_err: float | None = None
    fit: CombFit | None = field(default=None, repr=False)

    def row(self) -> dict:
        """One line of rates.csv."""
        out = {"frame": self.frame, "hdu": self.hdu, "extname": self.extname or "",
               "unmasked_pixels": self.unmasked_pixels}
        for k, n in enumerate(self.pixels_by_charge):
            out[f"pixels_{k}e"] = n
        out.update(
            ser_e_per_px=self.ser_e_per_px, ser_err=self.ser_err, noise_e=self.noise_e,
            misassigned_fraction=self.misassigned_fraction, exposure_s=self.exposure_s,
            readout_s=self.readout_s, mean_time_s=self.mean_time_s,
            ser_e_per_px_day=self.ser_e_per_px_day, ser_day_err=self.ser_day_err,
            fit_valid=None if self.fit is None else self.fit.valid,
        )
        return out


def header_times(header: dict | None) -> tuple[float | None, float | None]:
    """(exposure, readout) in seconds from the first of EXPOSURE_KEYWORDS / READOUT_KEYWORDS present."""
    found = []
    for keys in (EXPOSURE_KEYWORDS, READOUT_KEYWORDS):
        value = next((header[k] for k in keys if header and header.get(k) is not None), None)
        try:
            found.append(None if value is None else float(value))
        except (TypeError, ValueError):
            raise InputError(f"header keyword {keys[0]} = {value!r} is not a number of seconds") from None
    return found[0], found[1]


def rates(
    electrons: np.ndarray,
    mask: np.ndarray,
    calibration: Calibration,
    *,
    exposure_s: float | None = None,
    readout_s: float | None = None,
) -> Rates:
    """Single-electron rate λ (e⁻/pixel) in the pixels whose mask is 0.

    Counts: a pixel of charge q = (pixel − row pedestal) / gain holds k electrons when
    k − 0.5 ≤ q < k + 0.5. λ is not N1/N0 of those counts: at σ = 0.15 e⁻ the noise tail puts
    Φ(−0.5/σ) = 4·10⁻⁴ of the empty pixels above 0.5 e⁻, a 40 % bias at λ = 10⁻³; λ comes from
    :func:`fit_comb`, which models that tail, one λ per band of rows (:func:`row_bands`), combined
    weighted by their unmasked pixels. Frames whose peaks are not resolved
    (``calibration.resolves_electrons`` false) get counts only and λ = NaN.

    Per day: λ · 86400 / t̄ with t̄ = exposure + readout · (row + 0.5) / rows averaged over the
    unmasked pixels (rows read later wait longer); needs ``exposure_s`` (``readout_s`` defaults to 0).
    """
    electrons, mask = np.asarray(electrons), np.asarray(mask)
    if electrons.shape != mask.shape:
        raise InputError(f"{calibration.frame}: the mask ({mask.shape}) and image ({electrons.shape}) differ in shape")
    usable = mask == 0
    q = electrons[usable]
    k = electron_count(q)
    counts = [int(np.count_nonzero(k == n)) for n in range(COUNTED_PEAKS + 1)]
    lam = err = math.nan
    sigma = float(calibration.noise_e)
    fit = None
    if calibration.resolves_electrons and q.size:
        fit = fit_comb(q, calibration.noise_e, rows=np.nonzero(usable)[0], bands=row_bands(usable))
        lam, err, sigma = fit.values["lam"], fit.errors["lam"], fit.values["sigma"]
    result = Rates(
        frame=calibration.frame, hdu=calibration.hdu, extname=calibration.extname,
        unmasked_pixels=int(q.size), pixels_by_charge=counts, ser_e_per_px=lam, ser_err=err,
        noise_e=sigma, misassigned_fraction=float(special.ndtr(-0.5 / sigma)) if sigma > 0 else 0.0,
        exposure_s=exposure_s, readout_s=readout_s, fit=fit,
    )
    if exposure_s is not None and q.size:
        rows = np.nonzero(usable)[0]
        t = exposure_s + (readout_s or 0.0) * float(np.mean((rows + 0.5) / mask.shape[0]))
        if t <= 0:
            raise InputError(f"{calibration.frame}: exposure + readout time must be > 0 s, got {t}")
        result.mean_time_s = t
        result.ser_e_per_px_day = lam * SECONDS_PER_DAY / t
        result.ser_day_err = err * SECONDS_PER_DAY / t
    return result
