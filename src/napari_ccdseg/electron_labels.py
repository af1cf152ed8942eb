"""The ``physical`` auto-label preset on frames that resolve single electrons: rules in electrons.

At skipper noise one electron is ~6 σ, and dark current of ~1 e⁻/px (rising along the readout)
puts one, two or three electrons in most pixels: thresholds in units of σ call every dark-current
electron a cluster seed and the rise of dark current along the rows glowing. Here each pixel is
counted in electrons above its row's zero-electron peak (:func:`framescale.frame_scale`), and
every rule asks what dark current alone would give:

1. *Dark-current level*: λ of each block of 8 × 8 pixels from its share of empty pixels
   (λ = −ln P(0 e⁻)): clusters, trails and hot pixels only remove a few empty pixels, so
   they hardly move it. Summed over windows of ``glow_scale_px`` for the local λ, leaving out
   the clusters and hot pixels found against the trend (step 2) and 2 pixels around them —
   except blocks that such charge fills with Poisson-like counts (a glow band of a few e⁻/px,
   which keeps its own λ, at least its block's where the window reaches past its edge).
2. *Smooth trend*: a + b·row + c·column + d·row·column fitted robustly (3 σ clipping; where a
   block expects few occupied pixels, a Poisson tail instead) through the active blocks' λ:
   dark current growing along the readout, along rows and columns.
3. *Glowing*: windows holding more occupied pixels than the trend gives with the one-sided
   probability of a ``glow_sigma`` excess (binomial counts: exact at 10⁻³ e⁻/px, where a window
   holds a few electrons), and at least 0.1 e⁻/px above it: glow is local (the amplifier
   corner, a band of columns), a smooth rise never is.
4. *Hot columns*: columns holding more occupied pixels than the trend gives, by the same test,
   in groups at most ``hot_column_max_width`` wide (wider groups are a glowing band).
5. *Clusters*: 8-connected regions of pixels holding more electrons than dark current (the local
   λ: the window's, at least the trend's) puts in ``grow_probability`` of pixels, holding a seed
   above what it puts in ``seed_probability`` of pixels, and a charge above the dark current
   of at least ``min_cluster_e`` electrons.
6. *Hot pixels*: seeds that are straight 1-pixel-wide segments of at most ``hot_max_length``
   pixels with no neighbour at grow level: a hot pixel has no diffusion halo.

Precedence: cluster > hot pixel > glowing > background.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi
from scipy import stats

from .calibrate import _active_mask
from .classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from .framescale import FrameScale

if TYPE_CHECKING:
    from .autolabel import PhysicalParams

_BLOCK = 8
"""Pixels per side of the blocks whose empty share gives λ."""
_MIN_LAMBDA = 1e-4
"""λ floor (e⁻/px): an empty frame still has a finite seed threshold."""
_MIN_GLOW_E = 0.1
"""Least excess over the trend (e⁻/px) called glowing: at 10⁻³ e⁻/px a few stray electrons in a
window are significant, yet far below any glow (the simulator labels glow from 0.5 e⁻/px)."""
_GLOW_DISPERSION = 2.0
"""Variance over mean of a block's electron counts up to which it reads as dark current (Poisson:
1, plus a trend's spread); a cluster's or track's charge varies far more across its pixels."""
_TREND_KEEP_P = 1e-3
"""A block whose count of occupied pixels dark current at the trend gives with at least this
probability (either tail) stays in the trend fit, however small the spread of the others."""
_FEW_OCCUPIED = 10.0
"""Occupied pixels a block expects below which its counts, not the blocks' spread, decide
whether it stays in the trend fit (above it the 3 σ clipping is sound)."""


def label_electrons(image: np.ndarray, scale: FrameScale, p: PhysicalParams,
                    header: dict | None = None) -> np.ndarray:
    """uint8 class labels of a frame that resolves electrons (module docstring); ``header``'s
    PRESCAN/OVERSCAN/OVERSCNR keep the pre- and overscan (no dark current) out of the trend."""
    q = scale.electrons(image)
    counts = np.rint(q)
    empty = counts <= 0
    zeros, pixels = _block_sums(empty)
    active = _active_mask(q.shape, header)
    inside, _ = _block_sums(active)
    trend = _smooth_trend(zeros, pixels, inside >= pixels / 2)
    hot_columns = _hot_columns(empty, _pixels(trend, q.shape), p)
    # charge found against the trend alone stays out of the local λ (a track would lift it),
    # unless it fills whole blocks with Poisson-like counts: that is a glow band, whose λ is wanted
    clusters, hot = _charge(q, counts, trend, hot_columns, p)
    raised = _dark_current_like(counts, clusters)
    quiet = ~ndi.binary_dilation((clusters | hot) & ~_pixels(raised, q.shape), iterations=2)
    zeros, _ = _block_sums(empty & quiet)
    pixels, _ = _block_sums(quiet)
    window = max(1, round(p.glow_scale_px / _BLOCK))
    n_window = np.maximum(np.rint(ndi.uniform_filter(pixels, window, mode="nearest") * window**2), 1)
    zeros_window = np.rint(ndi.uniform_filter(zeros, window, mode="nearest") * window**2)
    lam_window = _lambda(zeros_window, n_window)
    bright = _poisson_excess(zeros_window, n_window, trend, p.glow_sigma)
    glowing = _pixels(bright & (lam_window - trend >= _MIN_GLOW_E), q.shape) & active
    # at a band's edge the window mixes band and surroundings: the band's blocks keep their own λ
    lam_blocks = np.maximum(lam_window, np.where(raised, _lambda(zeros, np.maximum(pixels, 1)), 0.0))
    clusters, hot = _charge(q, counts, np.maximum(lam_blocks, trend), hot_columns, p)
    labels = np.full(q.shape, BACKGROUND, dtype=np.uint8)
    labels[glowing] = GLOWING
    labels[:, hot_columns] = HOT_PIXEL
    labels[hot] = HOT_PIXEL
    labels[clusters] = CLUSTER
    return labels


def _charge(q: np.ndarray, counts: np.ndarray, lam_blocks: np.ndarray, hot_columns: np.ndarray,
            p: PhysicalParams) -> tuple[np.ndarray, np.ndarray]:
    """Cluster and hot-pixel masks against the dark current ``lam_blocks`` (λ of each block)."""
    local = _pixels(lam_blocks, q.shape)
    seeds = counts >= _pixels(_threshold(lam_blocks, p.seed_probability), q.shape)
    grown = counts >= _pixels(np.maximum(_threshold(lam_blocks, p.grow_probability), 1.0), q.shape)
    grown &= ~hot_columns[None, :]
    hot = _hot_segments(seeds & ~hot_columns[None, :], grown, p.hot_max_length)
    return _clusters(q, local, grown & ~hot, seeds, p.min_cluster_e), hot


def _block_sums(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of ``mask`` (a boolean mask: its pixels; counts: their sum) and all pixels of each
    8 × 8 block (edge blocks partial)."""
    rows, cols = mask.shape
    n_r, n_c = -(-rows // _BLOCK), -(-cols // _BLOCK)
    zeros = np.zeros((n_r * _BLOCK, n_c * _BLOCK), np.float32)
    inside = np.zeros_like(zeros)
    zeros[:rows, :cols] = mask
    inside[:rows, :cols] = 1
    return (zeros.reshape(n_r, _BLOCK, n_c, _BLOCK).sum(axis=(1, 3)),
            inside.reshape(n_r, _BLOCK, n_c, _BLOCK).sum(axis=(1, 3)))


def _dark_current_like(counts: np.ndarray, charged: np.ndarray) -> np.ndarray:
    """Blocks mostly of ``charged`` pixels whose electron counts spread like Poisson counts
    (variance at most ``_GLOW_DISPERSION`` times the mean): a region of raised dark current such
    as a glow band, not a cluster, whose charge piles up towards its core."""
    share, n = _block_sums(charged)
    total, _ = _block_sums(counts)
    squares, _ = _block_sums(counts**2)
    mean = total / n
    variance = squares / n - mean**2
    return (share >= 0.5 * n) & (variance <= _GLOW_DISPERSION * mean)


def _lambda(zeros: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """λ = −ln(empty share); half an empty pixel where there is none."""
    return -np.log(np.maximum(zeros, 0.5) / pixels)


def _smooth_trend(zeros: np.ndarray, pixels: np.ndarray, active: np.ndarray) -> np.ndarray:
    """a + b·row + c·column + d·row·column through the active blocks' λ (from their ``zeros``
    empty of ``pixels`` pixels), refitted without the blocks 3 robust σ off it (or, expecting
    few occupied pixels, unlikely by Poisson statistics): ramps along rows and columns, and
    their product (dark current ∝ exposure time, which grows with both). Blocks with under a
    tenth of the median λ (an overscan the header does not mark) stay out of the fit."""
    values = _lambda(zeros, pixels)
    rows, cols = np.indices(values.shape, dtype=np.float64)
    rows, cols = rows.ravel() / max(values.shape[0], 1), cols.ravel() / max(values.shape[1], 1)
    design = np.stack([np.ones(values.size), rows, cols, rows * cols], axis=1)
    y = values.ravel().astype(np.float64)
    usable = active.ravel() & np.isfinite(y)
    if usable.sum() < 4:
        usable = np.isfinite(y)
    usable &= y >= 0.1 * np.median(y[usable])
    occupied = (pixels - zeros).ravel()
    kept = usable.copy()
    fit = np.zeros(values.size)
    for _ in range(10):
        coefficients, *_ = np.linalg.lstsq(design[kept], y[kept], rcond=None)
        fit = design @ coefficients
        residual = y - fit
        spread = 1.4826 * float(np.median(np.abs(residual[kept])))
        # at ≲ 0.01 e⁻/px most blocks hold no electron: the spread is ~0 and the clipping alone
        # would drop every block with one, pulling the trend to 0 (and all else glowing); where a
        # block expects few occupied pixels, Poisson statistics decide instead
        chance = stats.binom(pixels.ravel().astype(np.int64), _occupied_share(fit))
        likely = (chance.sf(occupied - 1) >= _TREND_KEEP_P) & (chance.cdf(occupied) >= _TREND_KEEP_P)
        likely &= chance.mean() < _FEW_OCCUPIED
        now = usable & ((np.abs(residual) <= 3 * max(spread, 1e-6)) | likely)
        if now.sum() < 4 or np.array_equal(now, kept):
            break
        kept = now
    return np.maximum(fit.reshape(values.shape), _MIN_LAMBDA)


def _pixels(blocks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Each pixel takes its block's value."""
    return np.repeat(np.repeat(blocks, _BLOCK, axis=0), _BLOCK, axis=1)[: shape[0], : shape[1]]


def _threshold(lam: np.ndarray, probability: float) -> np.ndarray:
    """Fewest electrons k with P(X ≥ k; λ) ≤ probability, X ~ Poisson(λ), per pixel."""
    return stats.poisson.isf(probability, np.maximum(lam, _MIN_LAMBDA)) + 1


def _hot_columns(empty: np.ndarray, trend: np.ndarray, p: PhysicalParams) -> np.ndarray:
    """Columns holding a ``glow_sigma`` excess of occupied pixels over the trend, in groups at
    most ``hot_column_max_width`` wide."""
    n = np.full(empty.shape[1], empty.shape[0])
    bright = _poisson_excess(empty.sum(axis=0), n, trend.mean(axis=0), p.glow_sigma)
    groups, count = ndi.label(bright)
    if count == 0:
        return bright
    widths = np.bincount(groups, minlength=count + 1)
    narrow = widths <= p.hot_column_max_width
    narrow[0] = False
    return narrow[groups]


def _occupied_share(lam: np.ndarray) -> np.ndarray:
    """Share of pixels holding at least one electron at dark current λ."""
    return -np.expm1(-np.maximum(lam, _MIN_LAMBDA))


def _poisson_excess(zeros: np.ndarray, pixels: np.ndarray, lam: np.ndarray, sigma: float) -> np.ndarray:
    """Where ``pixels`` pixels hold more occupied ones (not among ``zeros``) than dark current λ
    gives with the one-sided probability of a ``sigma`` Gaussian excess: exact for the few
    electrons of a window at low λ, where a Gaussian error calls 2 electrons for 1 a 5 σ excess."""
    n = pixels.astype(np.int64)
    occupied = n - zeros.astype(np.int64)
    return stats.binom.sf(occupied - 1, n, _occupied_share(lam)) <= stats.norm.sf(sigma)


def _hot_segments(seeds: np.ndarray, grown: np.ndarray, longest: int) -> np.ndarray:
    """Seeds forming straight 1-pixel-wide segments of at most ``longest`` pixels with no
    neighbour at grow level: a hot pixel has no diffusion halo."""
    cores, count = ndi.label(seeds)
    if count == 0:
        return seeds
    hot = np.zeros(count + 1, dtype=bool)
    for index, box in enumerate(ndi.find_objects(cores), start=1):
        sizes = sorted(s.stop - s.start for s in box)
        if sizes[0] != 1 or sizes[1] > longest:
            continue
        ring = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        hot[index] = not (grown[ring] & (cores[ring] != index)).any()
    return hot[cores]


def _clusters(q: np.ndarray, local: np.ndarray, grown: np.ndarray, seeds: np.ndarray,
              min_charge: float) -> np.ndarray:
    """8-connected regions of grown pixels holding a seed and ``min_charge`` e⁻ above the dark current."""
    regions, count = ndi.label(grown, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return grown
    seeded = np.zeros(count + 1, dtype=bool)
    seeded[regions[seeds & grown]] = True
    inside = regions > 0
    charge = np.bincount(regions[inside], weights=(q - local)[inside], minlength=count + 1)
    keep = seeded & (charge >= min_charge)
    keep[0] = False
    return keep[regions]
