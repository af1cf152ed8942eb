"""Geometric-only augmentation of (image, label) tiles, in lockstep, with albumentations.

No intensity changes: labels come from intensity thresholds and from the noise level, so
changing brightness or adding blur would make the labels wrong. Pixels are moved, never
resampled: affine transforms use nearest-neighbour for the image as well as the mask, so the
pixel-value distribution (read noise, single electrons) stays that of a real frame.

Band strips (:func:`paste_band_strip`) copy a few columns of a frame's own glowing band onto a
tile's edge: training frames with wide bands then teach what real frames show, a thin strip of glow
at the frame's edge next to empty background, which a model that saw only wide bands calls clusters.
Hot-pixel pastes (:func:`paste_hot_pixels`) do the same for frames whose hot pixels come only in
dense groups: single hot pixels and short segments in empty background, as real frames have them.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from .classes import GLOWING, HOT_PIXEL, UNLABELLED

BAND_SHARE = 0.9
"""A column belongs to a glowing band when at least this share of its labelled pixels are glowing."""
MAX_STRIP_PX = 16
MAX_HOT_PASTES = 8
MAX_HOT_LENGTH = 6

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would call the network on import
import albumentations as A  # noqa: E402


def build_augmentation(tile_size: int, seed: int = 0, keep_axes: bool = True) -> A.Compose:
    """Flips, a mild affine (scale/shift) and pad-then-crop to ``tile_size``; with ``keep_axes``
    False also 90° turns and rotations of up to 20°.

    A CCD's rows and columns are not alike: charge moves down the columns, then along the serial
    register, so hot columns and glow bands run along columns and serial-register trails and CTI
    tails along rows. Turned tiles teach a model that a faint line is a hot column whichever way it
    runs, and it calls faint serial trails hot pixel."""
    turns = [] if keep_axes else [A.RandomRotate90(p=0.5)]
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            *turns,
            A.Affine(
                scale=(0.9, 1.1),
                translate_percent=(-0.05, 0.05),
                rotate=0 if keep_axes else (-20, 20),
                interpolation=cv2.INTER_NEAREST,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=UNLABELLED,
                p=0.3,
            ),
            A.PadIfNeeded(
                tile_size, tile_size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=UNLABELLED
            ),
            A.RandomCrop(tile_size, tile_size),
        ],
        seed=seed,
    )


def augment_pair(
    transform: A.Compose, image: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random draw of ``transform`` to a normalised tile and its label map alike."""
    out = transform(image=image, mask=labels)
    return out["image"], out["mask"]


def band_columns(labels: np.ndarray) -> np.ndarray:
    """Indices of the columns that are glowing along ≥ 90 % of their labelled pixels (a band's)."""
    labelled = (labels != UNLABELLED).sum(0)
    glowing = (labels == GLOWING).sum(0)
    return np.flatnonzero((labelled > 0) & (glowing >= BAND_SHARE * labelled))


def paste_band_strip(
    image: np.ndarray,
    labels: np.ndarray,
    source: tuple[np.ndarray, np.ndarray],
    columns: np.ndarray,
    rng: np.random.Generator,
    max_width: int = MAX_STRIP_PX,
    keep_axes: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The tile with a strip of 1–``max_width`` (log-uniform) adjacent band ``columns`` of ``source`` (image,
    labels of the same frame) along its left or right edge (any edge unless ``keep_axes``: see
    :func:`build_augmentation`); the tile unchanged when the frame is too short."""
    source_image, source_labels = source
    if len(columns) == 0 or source_labels.shape[0] < max(labels.shape):
        return image, labels
    turns = 2 * int(rng.integers(2)) if keep_axes else int(rng.integers(4))
    image, labels = np.rot90(image, turns).copy(), np.rot90(labels, turns).copy()
    rows, cols = labels.shape
    runs = np.split(columns, np.flatnonzero(np.diff(columns) != 1) + 1)
    run = runs[rng.integers(len(runs))]
    limit = min(max_width, len(run), cols)
    width = min(int(np.exp(rng.uniform(0, np.log(limit + 1)))), limit)  # log-uniform: thin strips are the hard ones
    first = run[int(rng.integers(len(run) - width + 1))]
    top = int(rng.integers(source_labels.shape[0] - rows + 1))
    image[:, :width] = source_image[top : top + rows, first : first + width]
    labels[:, :width] = source_labels[top : top + rows, first : first + width]
    return np.rot90(image, -turns).copy(), np.rot90(labels, -turns).copy()


def paste_hot_pixels(
    image: np.ndarray,
    labels: np.ndarray,
    values: np.ndarray,
    rng: np.random.Generator,
    max_count: int = MAX_HOT_PASTES,
    max_length: int = MAX_HOT_LENGTH,
    keep_axes: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The tile with 1–``max_count`` hot pixels or segments (1–``max_length`` px along a column, or
    unless ``keep_axes`` half of them along a row) at random places, their values drawn from
    ``values`` (the frame's own hot pixels)."""
    if len(values) == 0:
        return image, labels
    image, labels = image.copy(), labels.copy()
    rows, cols = labels.shape
    for _ in range(int(rng.integers(1, max_count + 1))):
        length = int(rng.integers(1, max_length + 1))
        row, col = int(rng.integers(rows)), int(rng.integers(cols))
        along_row = rng.random() >= 0.5 and not keep_axes
        where = (row, slice(col, col + length)) if along_row else (slice(row, row + length), col)
        image[where] = rng.choice(values, size=image[where].shape)
        labels[where] = HOT_PIXEL
    return image, labels
