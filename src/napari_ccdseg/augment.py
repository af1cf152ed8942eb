"""Geometric-only augmentation of (image, label) tiles, in lockstep, with albumentations.

No intensity changes: labels come from intensity thresholds and from the noise level, so
changing brightness or adding blur would make the labels wrong. Pixels are moved, never
resampled: affine transforms use nearest-neighbour for the image as well as the mask, so the
pixel-value distribution (read noise, single electrons) stays that of a real frame.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from .classes import UNLABELLED

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would call the network on import
import albumentations as A  # noqa: E402


def build_augmentation(tile_size: int, seed: int = 0) -> A.Compose:
    """Flips, 90° turns, a mild affine (scale/shift/rotate) and pad-then-crop to ``tile_size``."""
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(
                scale=(0.9, 1.1),
                translate_percent=(-0.05, 0.05),
                rotate=(-20, 20),
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
