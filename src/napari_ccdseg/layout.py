"""Where the amplifiers of one file go on screen, what they are called there, and how bright they look.

A multi-extension FITS file holds one image per amplifier (often several CCDs). Shown at the same
place they hide each other, so each frame gets a :class:`Placement` (a napari ``translate`` and
``scale``), chosen, in this order, from:

1. ``DETSEC`` in every extension (``[x1:x2,y1:y2]``, 1-based detector pixels): the amplifiers are
   put in the grid cells their detector sections occupy (distinct x starts give the columns,
   distinct y starts the rows), and a section written right-to-left (``x1 > x2``) or top-to-bottom
   is shown mirrored, as it sits on the detector. Cells, not the exact detector pixels: frames
   usually carry prescan and overscan, which would overlap the neighbouring amplifier.
2. A CCD keyword (``CCDNUM``, ``CCD_ID``, ``CCDID``, ``CCD``) that differs between extensions: one
   row per CCD, its amplifiers side by side in file order.
3. Otherwise a grid in file order: one row of up to :data:`ROW_OF` amplifiers, else
   ``ceil(sqrt(n))`` columns.

Neighbouring cells are :func:`gap` pixels apart. Nothing here changes pixel values; saved label
maps stay in each amplifier's own pixel frame.

Only headless code: the reader and the widgets use it, and so can a script.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .noise import pedestal_noise

ROW_OF = 4
"""Up to this many amplifiers without layout keywords are shown in one row (one CCD's serial register)."""
CCD_KEYS: tuple[str, ...] = ("CCDNUM", "CCD_ID", "CCDID", "CCD")
SHORT_STEM = 18
"""File stems longer than this are shortened to their last characters in layer names."""
NOISE_BELOW, NOISE_ABOVE = 3.0, 20.0
"""Default contrast of an uncalibrated frame: pedestal − 3 σ to pedestal + 20 σ of its read noise."""
LOW_PERCENTILE = 0.1
"""The scale never starts below this percentile of the frame (a few dead or negative pixels are not noise)."""

_SECTION = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")


@dataclass(frozen=True)
class Placement:
    """Where a frame sits in the viewer: world = scale · pixel + translate, per (row, column) axis.

    A scale of −1 mirrors the frame (its ``translate`` is then the world position of pixel 0,
    at the far edge of its cell). ``how`` says which rule placed it: detsec, ccd, grid or single.
    """

    translate: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)
    how: str = "single"

    def layer_kwargs(self) -> dict:
        """``translate`` and ``scale`` as napari layer keyword arguments."""
        return {"translate": tuple(self.translate), "scale": tuple(self.scale)}


def parse_section(value: object) -> tuple[int, int, int, int] | None:
    """``'[x1:x2,y1:y2]'`` -> (x1, x2, y1, y2), 1-based as written; None when absent or malformed."""
    if not isinstance(value, str):
        return None
    match = _SECTION.match(value)
    return tuple(int(v) for v in match.groups()) if match else None  # type: ignore[return-value]


def gap(shapes: Sequence[tuple[int, int]]) -> int:
    """Pixels between neighbouring amplifiers: 2 % of the widest frame, at least 8."""
    return max(8, round(0.02 * max(max(shape[:2]) for shape in shapes)))


def _grid_cells(count: int) -> list[tuple[int, int]]:
    columns = count if count <= ROW_OF else math.ceil(math.sqrt(count))
    return [divmod(index, columns) for index in range(count)]


def _detsec_cells(headers: Sequence[dict]) -> tuple[list[tuple[int, int]], list[tuple[bool, bool]]] | None:
    """Grid cells and (row, column) mirroring from DETSEC, or None unless every frame has a distinct one."""
    sections = [parse_section(header.get("DETSEC")) for header in headers]
    if any(s is None for s in sections) or len(set(sections)) != len(sections):
        return None
    xs = sorted({min(s[0], s[1]) for s in sections})  # type: ignore[index]
    ys = sorted({min(s[2], s[3]) for s in sections})  # type: ignore[index]
    cells = [(ys.index(min(s[2], s[3])), xs.index(min(s[0], s[1]))) for s in sections]  # type: ignore[index]
    if len(set(cells)) != len(cells):
        return None
    flips = [(s[2] > s[3], s[0] > s[1]) for s in sections]  # type: ignore[index]
    return cells, flips


def _ccd_cells(headers: Sequence[dict]) -> list[tuple[int, int]] | None:
    """One row per CCD (keyword values in sorted order), amplifiers in file order; None without such a keyword."""
    for key in CCD_KEYS:
        values = [header.get(key) for header in headers]
        if any(v is None for v in values) or len(set(map(str, values))) < 2:
            continue
        ccds = sorted(set(map(str, values)), key=lambda v: (len(v), v))
        seen: dict[str, int] = {}
        cells = []
        for value in map(str, values):
            cells.append((ccds.index(value), seen.get(value, 0)))
            seen[value] = seen.get(value, 0) + 1
        return cells
    return None


def place_frames(shapes: Sequence[tuple[int, int]], headers: Sequence[dict] | None = None) -> list[Placement]:
    """A placement for each frame of one file (see the module docstring for the rules)."""
    count = len(shapes)
    if count <= 1:
        return [Placement() for _ in shapes]
    headers = list(headers) if headers is not None else [{} for _ in shapes]
    flips = [(False, False)] * count
    detsec = _detsec_cells(headers)
    if detsec is not None:
        (cells, flips), how = detsec, "detsec"
    elif (ccd := _ccd_cells(headers)) is not None:
        cells, how = ccd, "ccd"
    else:
        cells, how = _grid_cells(count), "grid"
    space = gap(shapes)
    n_rows = 1 + max(r for r, _ in cells)
    n_cols = 1 + max(c for _, c in cells)
    heights = [max((s[0] for s, (r, _) in zip(shapes, cells) if r == row), default=0) for row in range(n_rows)]
    widths = [max((s[1] for s, (_, c) in zip(shapes, cells) if c == col), default=0) for col in range(n_cols)]
    tops = np.concatenate([[0], np.cumsum(np.asarray(heights) + space)])
    lefts = np.concatenate([[0], np.cumsum(np.asarray(widths) + space)])
    placements = []
    for shape, (row, col), (flip_rows, flip_cols) in zip(shapes, cells, flips):
        top, left = float(tops[row]), float(lefts[col])
        translate = (top + shape[0] - 1 if flip_rows else top, left + shape[1] - 1 if flip_cols else left)
        scale = (-1.0 if flip_rows else 1.0, -1.0 if flip_cols else 1.0)
        placements.append(Placement(translate, scale, how))
    return placements


def detector_pixel(header: dict, shape: tuple[int, int], row: int, col: int) -> tuple[int, int] | None:
    """(x, y) on the detector, 1-based as ds9 and ``DETSEC`` count, of pixel (row, col) of a frame.

    From ``DETSEC`` and ``DATASEC`` (the whole frame of ``shape`` when absent), either read out in
    reverse. None without a ``DETSEC``, for a pixel outside the data section (prescan, overscan),
    and with binning (sections of different lengths), where a pixel covers several detector pixels.
    """
    det = parse_section(header.get("DETSEC"))
    if det is None:
        return None
    data = parse_section(header.get("DATASEC")) or (1, shape[1], 1, shape[0])
    (dx1, dx2), (dy1, dy2) = sorted(data[:2]), sorted(data[2:])
    x, y = col + 1, row + 1  # FITS pixel numbers within the frame
    if not (dx1 <= x <= dx2 and dy1 <= y <= dy2):
        return None
    if abs(det[1] - det[0]) != dx2 - dx1 or abs(det[3] - det[2]) != dy2 - dy1:
        return None
    return (
        det[0] + (x - dx1) * (1 if det[1] >= det[0] else -1),
        det[2] + (y - dy1) * (1 if det[3] >= det[2] else -1),
    )


def short_stem(stem: str) -> str:
    """A file stem short enough for the layer list: its last characters, where run and image numbers are."""
    return stem if len(stem) <= SHORT_STEM else "…" + stem[-(SHORT_STEM - 1):].lstrip("_-. ")


def display_name(stem: str, key: str | None) -> str:
    """A layer name that keeps the amplifier in view: ``AMP1 · run15`` (``key`` None: the stem alone)."""
    return stem if key is None else f"{key} · {short_stem(stem)}"


def noise_contrast(image: np.ndarray) -> tuple[float, float]:
    """Pedestal − 3 σ to pedestal + 20 σ: the noise and faint clusters visible, bright tracks saturated.

    On a skipper frame (σ ≈ 0.15 e⁻) this spans about −0.5 to +3 e⁻, so single electrons show;
    percentiles would stretch the scale to the brightest 0.5 % of pixels instead.
    """
    pedestal, sigma = pedestal_noise(image)
    low, high = pedestal - NOISE_BELOW * sigma, pedestal + NOISE_ABOVE * sigma
    values = np.asarray(image)
    if values.size:  # no range beyond the frame's own values (a blank frame keeps a visible scale)
        step = max(1, max(values.shape[:2]) // 2048)  # a strided sample: the percentile of a 6k² frame fast
        sample = values[::step, ::step]
        sample = sample[np.isfinite(sample)]
        if sample.size:
            low = max(low, float(np.percentile(sample, LOW_PERCENTILE)))
        with np.errstate(invalid="ignore"):
            top = float(np.nanmax(values))  # the brightest pixel itself, not a sample's
        if np.isfinite(top):
            high = min(high, top)
    return (low, high) if high > low else (low, low + max(sigma, 1e-6))


def electron_contrast(calibration: dict, top_electrons: float) -> tuple[float, float]:
    """ADU limits showing 0 … ``top_electrons`` e⁻ above the pedestal, from a ``Calibration.to_dict()``.

    The scale starts half an electron below the pedestal, so the zero-electron peak is dark, not split.
    """
    gain = float(calibration["gain_adu_per_e"])
    pedestal = float(calibration["pedestal_adu"])
    low, high = pedestal - 0.5 * gain, pedestal + top_electrons * gain
    return (low, high) if high > low else (high, low)
