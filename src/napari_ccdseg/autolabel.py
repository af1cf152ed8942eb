"""Auto-labeler: class label maps from frames by thresholds, with no network.

Two presets:

``seed-v1``
    The original project's ordered colour rules on the monochrome value (mean of R, G, B), for
    its viridis-rendered PNGs. The first matching rule wins; pixels no rule matches get
    ``unmatched`` (255 = unlabelled, or background if the caller prefers).

``physical``
    For frames in ADU or electrons. Frames that resolve single electrons (a skipper comb, found
    by :func:`framescale.frame_scale` or given as a calibration) are labelled by rules in
    electrons against the local dark current (:mod:`electron_labels`); all others as follows.
    Everything is measured in units of σ, the frame's read noise
    (MAD of the frame minus its large-scale level, :mod:`napari_ccdseg.noise`), so the labels do
    not change under a gain and pedestal change ``a·x + b`` (a > 0):

    1. *Large-scale level* (glow + pedestal), blind to compact charge: the running median of
       the column medians (keeps the exact edges of glowing column bands, drops hot columns
       up to ``hot_column_max_width`` wide), plus the row medians (glow along rows), plus a
       separable running median over about ``glow_scale_px`` of block means of what is left
       (2-D glow such as an amplifier corner), upsampled bilinearly. The running medians repeat
       the edge sample, so a glow peaking at the frame edge is followed instead of flattened.
    2. *Glowing*: pixels where the level exceeds the pedestal (median of the glow-free pixels)
       by ``glow_sigma`` times the level's own noise at that pixel (computed from the medians'
       sample counts; larger near the frame edges): a significance cut on a smooth excess.
    3. *Residual* r = (frame − level) / σ: charge above the local background, so clusters and
       hot pixels sitting on glow are found as easily as elsewhere.
    4. *Hot columns*: columns whose median residual is at least ``hot_column_sigma``. Their
       excess is subtracted before the next steps, so clusters crossing them are still found.
    5. *Hot pixels*: cores of r ≥ ``hot_sigma`` (4-connected) that are straight 1-pixel-wide
       segments along a row or column, at most ``hot_max_length`` long, with no neighbour at or
       above ``hot_ring_sigma``. A hot pixel and a cluster that put all their charge in one pixel
       look identical; this choice calls a bright isolated pixel hot, and one with a charge
       halo (diffusion spreads every cluster but the shallowest) a cluster.
    6. *Clusters*: seed-and-grow hysteresis on r: 8-connected regions of r ≥ ``grow_sigma``
       that hold a seed ≥ ``seed_sigma`` and at least ``min_cluster_pixels`` pixels, hot pixels
       excluded. A lone pixel above seed level is a noise spike, one dark-current electron at
       skipper read noise (where one electron is about 6 σ) or a hot pixel, not a cluster:
       counting them gave about 36,000 fake clusters per megapixel at 0.16 e⁻ read noise.

    Precedence where masks overlap: cluster > hot pixel > glowing > background. Background is
    every pixel left, so the preset labels every pixel. It assumes most of the frame is
    glow-free pedestal; with ``row_pedestal`` the row medians are removed first, which follows
    a baseline drifting along the readout but also removes glow that runs along whole rows.

Class statistics and the loss's class weights live with the class scheme, in :mod:`classes`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from .calibrate import Calibration
from .classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL, UNLABELLED
from .electron_labels import label_electrons
from .errors import InputError
from .framescale import electron_scale
from .io import monochrome
from .noise import check_finite, pedestal_noise, row_pedestals


@dataclass(frozen=True)
class Rule:
    """Class ``cls`` for values strictly between ``above`` and ``below`` (None: unbounded)."""

    cls: int
    above: float | None = None
    below: float | None = None

    def matches(self, v: np.ndarray) -> np.ndarray:
        """Boolean mask of the values this rule claims (NaN matches nothing)."""
        hit = np.ones(v.shape, dtype=bool) if self.above is None else v > self.above
        if self.below is not None:
            hit &= v < self.below
        return hit


SEED_V1_RULES: tuple[Rule, ...] = (
    Rule(BACKGROUND, below=51.01),
    Rule(GLOWING, above=99.99, below=101.01),
    Rule(HOT_PIXEL, above=124),
    Rule(CLUSTER, above=59, below=120.1),
)
"""The original project's colour rules on the RGB mean, in its order (first match wins)."""

LABEL_PRESETS: tuple[str, ...] = ("seed-v1", "physical")

_MEDIAN_EFFICIENCY = 1.2533
"""σ of the median of n Gaussian values, times sqrt(n)."""

_MAX_MEDIAN_SAMPLES = 1024
"""Samples per row or column median: its noise (1.25 σ/√1024) stays far below any cut."""


@dataclass
class PhysicalParams:
    """Thresholds of the ``physical`` preset, in units of the frame's read noise σ."""

    seed_sigma: float = 4.0
    """A cluster needs at least one pixel this far above the local level."""
    grow_sigma: float = 2.0
    """Pixels this high, connected to a seed, join its cluster (the charge halo)."""
    hot_sigma: float = 10.0
    """A hot pixel's core level: well above seed level, so a dim lone deposit is not called hot."""
    hot_ring_sigma: float = 4.0
    """A hot core's neighbours must all stay below this (no diffusion halo)."""
    hot_max_length: int = 20
    """Longest straight hot segment, px; longer 1-pixel lines are tracks."""
    hot_column_sigma: float = 1.0
    """Median excess of a hot column over the local level."""
    hot_column_max_width: int = 3
    """Widest group of adjacent hot columns, px; wider ones are a glowing band."""
    glow_sigma: float = 5.0
    """Significance of a glowing excess, in units of the smoothed level's noise."""
    glow_scale_px: int = 32
    """Scale of the large-scale level, px: wider than clusters, narrower than glow."""
    row_pedestal: bool = False
    """Remove row medians first (drifting baseline); also removes glow along whole rows."""
    min_cluster_pixels: int = 2
    """A cluster needs at least this many pixels >= grow_sigma; a lone pixel above seed is a
    noise spike, one dark-current electron at skipper noise, or a hot pixel."""
    seed_probability: float = 1e-5
    """Frames that resolve electrons (:mod:`electron_labels`): a seed holds more electrons than
    the local dark current puts in this share of pixels (at λ = 1 e⁻/px: 9 e⁻)."""
    grow_probability: float = 0.05
    """…and its cluster's pixels more than it puts in this share (at least 1 e⁻; at λ = 1: 4 e⁻)."""
    min_cluster_e: float = 3.0
    """…and the cluster at least this many electrons above the dark current."""

    def __post_init__(self) -> None:
        """Refuse settings that make the preset meaningless, before a long run starts."""
        if not 0 < self.grow_sigma <= self.seed_sigma:
            raise InputError(
                f"physical auto-label parameters: need 0 < grow_sigma <= seed_sigma, "
                f"got grow_sigma={self.grow_sigma}, seed_sigma={self.seed_sigma}"
            )
        if min(self.glow_scale_px, self.hot_max_length, self.hot_column_max_width) < 1:
            raise InputError(
                "physical auto-label parameters: glow_scale_px, hot_max_length and "
                "hot_column_max_width must be >= 1"
            )
        if not 0 < self.seed_probability <= self.grow_probability < 1 or self.min_cluster_e < 0:
            raise InputError(
                "physical auto-label parameters: need 0 < seed_probability <= grow_probability < 1 "
                f"and min_cluster_e >= 0, got {self.seed_probability}, {self.grow_probability}, {self.min_cluster_e}"
            )
        if self.min_cluster_pixels < 1:
            raise InputError(
                "physical auto-label parameters: min_cluster_pixels must be >= 1, "
                f"got {self.min_cluster_pixels}"
            )

    def to_dict(self) -> dict:
        """Plain dict, for metadata and reports."""
        return asdict(self)


def apply_rules(
    v: np.ndarray, rules: Iterable[Rule], unmatched: int = UNLABELLED
) -> np.ndarray:
    """uint8 labels from ordered rules: the first rule matching a value wins."""
    v = np.asarray(v)
    labels = np.full(v.shape, unmatched, dtype=np.uint8)
    for rule in reversed(tuple(rules)):  # earlier rules overwrite later ones
        labels[rule.matches(v)] = rule.cls
    return labels


def label_frame(
    image: np.ndarray,
    preset: str = "physical",
    *,
    unmatched: int = UNLABELLED,
    params: PhysicalParams | None = None,
    name: str = "frame",
    calibration: Calibration | None = None,
    header: dict | None = None,
) -> np.ndarray:
    """uint8 class labels of one frame or colour image by a preset (see the module docstring).

    ``unmatched`` is the label of pixels no rule claims; ``physical`` labels every pixel, by
    rules in electrons (:mod:`electron_labels`) where the frame resolves electrons (its
    ``calibration`` says so, or :func:`framescale.frame_scale` finds its comb; ``header`` gives
    the pre- and overscan), else by the rules in σ below.
    """
    if preset not in LABEL_PRESETS:
        raise InputError(
            f"{name}: unknown auto-label preset {preset!r}; "
            f"choose one of {', '.join(LABEL_PRESETS)}"
        )
    if not 0 <= unmatched <= 255:
        raise InputError(f"{name}: the unmatched label must be 0-255, got {unmatched}")
    v = monochrome(image, name).astype(np.float32)
    check_finite(v, name)
    if preset == "seed-v1":
        return apply_rules(v, SEED_V1_RULES, unmatched)
    params = params or PhysicalParams()
    scale = electron_scale(v, calibration=calibration, header=header)
    if scale is not None:
        return label_electrons(v, scale, params, header)
    return _label_physical(v, params)


def _label_physical(v: np.ndarray, p: PhysicalParams) -> np.ndarray:
    """The ``physical`` preset on a finite float32 frame."""
    frame = v - row_pedestals(v)[:, None] if p.row_pedestal else v
    level, level_noise = _large_scale_level(frame, p)
    sigma = pedestal_noise(frame - level)[1]
    glow_cut = (p.glow_sigma * sigma) * level_noise
    pedestal = _glow_free_pedestal(frame, level, glow_cut)
    residual = (frame - level) / sigma
    hot_columns, column_excess = _hot_columns(residual, p.hot_column_sigma)
    residual -= np.where(hot_columns, column_excess, np.float32(0))
    hot = _hot_segments(residual, p)
    labels = np.full(v.shape, BACKGROUND, dtype=np.uint8)
    labels[level - pedestal >= glow_cut] = GLOWING
    labels[hot] = HOT_PIXEL
    labels[:, hot_columns] = HOT_PIXEL
    labels[_hysteresis(residual, p, exclude=hot)] = CLUSTER
    return labels


def _large_scale_level(frame: np.ndarray, p: PhysicalParams) -> tuple[np.ndarray, np.ndarray]:
    """Glow + pedestal, and its noise on a pure-noise frame in units of σ.

    Three parts, each blind to compact charge: a column profile (exact edges of glowing column
    bands, hot columns left out), a row profile (glow along rows), a smooth 2-D remainder.
    """
    rows, cols = frame.shape
    columns = _running_median(_median(frame, axis=0), 2 * p.hot_column_max_width + 1)
    rest = frame - columns[None, :]
    row_level = _median(rest, axis=1)[:, None]
    smooth, smooth_noise = _smooth_level(rest - row_level, p.glow_scale_px)
    column_noise = _edge_noise(cols, 2 * p.hot_column_max_width + 1) * (
        _MEDIAN_EFFICIENCY / np.sqrt(_sampled(rows))
    )
    row_noise = _MEDIAN_EFFICIENCY / np.sqrt(_sampled(cols))
    noise = np.sqrt(smooth_noise**2 + (column_noise**2)[None, :] + row_noise**2)
    return columns[None, :] + row_level + smooth, noise


def _smooth_level(frame: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Separable running median of block means, upsampled bilinearly; and its noise in σ.

    Blocks keep the median cheap (a 4096² frame in well under a second); the median, unlike a
    mean, ignores compact charge and hot columns.
    """
    block = max(1, scale // 8)
    window = max(1, scale // block) | 1
    rows, cols = frame.shape
    padded = np.pad(frame, ((0, -rows % block), (0, -cols % block)), mode="edge")
    means = padded.reshape(padded.shape[0] // block, block, -1, block).mean(axis=(1, 3))
    smooth = _running_median(_running_median(means, window, axis=1), window, axis=0)
    if block > 1:
        smooth = ndi.zoom(smooth, block, order=1, grid_mode=True, mode="nearest")
    row_noise = np.repeat(_edge_noise(means.shape[0], window), block)[:rows]
    col_noise = np.repeat(_edge_noise(means.shape[1], window), block)[:cols]
    return smooth[:rows, :cols], np.outer(row_noise, col_noise / block)


def _running_median(values: np.ndarray, size: int, axis: int = -1) -> np.ndarray:
    """Running median along one axis whose edge samples repeat the edge value.

    Repeating the edge follows a glow that peaks at the frame edge (a mirrored window would
    flatten it and leave false clusters there), at the price of noisier edge samples, which
    :func:`_edge_noise` accounts for.
    """
    footprint = [1] * values.ndim
    footprint[axis] = size
    return ndi.median_filter(values, size=tuple(footprint), mode="nearest")


def _edge_noise(n: int, size: int) -> np.ndarray:
    """σ of :func:`_running_median` of unit Gaussian noise at each of n positions.

    A sample k positions from an edge sees the edge value repeated, about the median of k + 1
    values (measured within 10 %, on the safe side); inside it is the median of ``size`` values.
    """
    k = np.minimum(np.arange(n), np.arange(n)[::-1])
    return np.maximum(1 / np.sqrt(k + 1), _MEDIAN_EFFICIENCY / np.sqrt(size)).astype(np.float32)


def _median(frame: np.ndarray, axis: int) -> np.ndarray:
    """Median along an axis over about _MAX_MEDIAN_SAMPLES evenly strided samples, for speed."""
    index = [slice(None)] * 2
    index[axis] = slice(None, None, _stride(frame.shape[axis]))
    return np.median(frame[tuple(index)], axis=axis)


def _stride(n: int) -> int:
    """Stride that leaves about _MAX_MEDIAN_SAMPLES of n samples."""
    return max(1, n // _MAX_MEDIAN_SAMPLES)


def _sampled(n: int) -> int:
    """How many samples :func:`_median` uses along an axis of length n."""
    return -(-n // _stride(n))


def _glow_free_pedestal(frame: np.ndarray, level: np.ndarray, cut: np.ndarray) -> float:
    """Median of the pixels whose level is not glowing, so a wide glow does not lift it."""
    first = pedestal_noise(level)[0]
    quiet = frame[level - first < cut]
    return pedestal_noise(quiet)[0] if quiet.size else first


def _hot_columns(residual: np.ndarray, cut: float) -> tuple[np.ndarray, np.ndarray]:
    """Columns whose median residual reaches ``cut``, and every column's median residual."""
    excess = _median(residual, axis=0)
    return excess >= cut, excess.astype(np.float32)


def _hot_segments(residual: np.ndarray, p: PhysicalParams) -> np.ndarray:
    """Mask of straight, short, 1-pixel-wide bright cores with no halo (module docstring, 5)."""
    core = residual >= p.hot_sigma
    cores, count = ndi.label(core)
    if count == 0:
        return core
    around = np.where(core, -np.inf, residual)
    hot = np.zeros(count + 1, dtype=bool)
    for index, box in enumerate(ndi.find_objects(cores), start=1):
        sizes = sorted(s.stop - s.start for s in box)
        if sizes[0] != 1 or sizes[1] > p.hot_max_length:
            continue  # a 4-connected core one pixel thick fills its box: a straight segment
        ring = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        hot[index] = around[ring].max() < p.hot_ring_sigma
    return hot[cores]


def _hysteresis(residual: np.ndarray, p: PhysicalParams, exclude: np.ndarray) -> np.ndarray:
    """8-connected regions of residual >= grow that hold a seed and enough pixels to be charge."""
    low = (residual >= p.grow_sigma) & ~exclude
    regions, count = ndi.label(low, structure=np.ones((3, 3), dtype=bool))
    seeded = np.zeros(count + 1, dtype=bool)
    seeded[regions[low & (residual >= p.seed_sigma)]] = True
    seeded &= np.bincount(regions.ravel(), minlength=count + 1) >= p.min_cluster_pixels
    seeded[0] = False
    return seeded[regions]
