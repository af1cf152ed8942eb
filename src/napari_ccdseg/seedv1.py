"""Simulated frames drawn the way the original Keras project drew its images (the seed-v1 format).

Its images are noiseless frames rendered with matplotlib's viridis colour map, each class at its own
level of a 25-step scale: background 0, glowing 10, hot pixels 25 (the top), cluster pixels 1–9 by
their charge. The ``seed-v1`` colour rules (:data:`autolabel.SEED_V1_RULES`) read the classes back.
Its training images are balanced (a 40–60 column glow band, a block of hot lines, clusters); real
frames are not, so :data:`REALISTIC` draws what they look like — a thin glowing strip at the frame's
edge, a few hot pixels and a few clusters — as test frames a model trained on balanced images never saw.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .classes import CLUSTER, GLOWING, HOT_PIXEL
from .errors import InputError
from .simulate import SIM_PRESETS, SimConfig, SimulatedFrame, frame_seed, simulate_frame

STEPS = 25
"""Levels of the original's scale: 0 background … 25 the brightest (hot pixels)."""
GLOWING_LEVEL = 10
HOT_LEVEL = STEPS
CLUSTER_LEVELS = (1, 9)
"""Cluster pixels take 1–9 (level k holds up to 2^k e⁻): the rules read 10 as glowing and ≥ 18 as hot."""

REALISTIC = SimConfig(
    rows=256, cols=256, read_noise_e=0.0, dark_current_e=0.0, amp_glow_e=0.0,
    glow_band_probability=1.0, glow_band_width=(2, 10), glow_band_position="left",
    hot_pixels=(10.0, 40.0), hot_segments=(0.0, 20.0), hot_segments_along_rows=0.5, hot_columns=(0.0, 0.0),
    cluster_rate=24.0, muon_rate=0.5, electron_track_rate=1.5,
)
"""A real-looking frame in the seed-v1 format: per 256² a 2–10 column glowing strip at the left
edge, 2–10 hot pixels, 0–5 short hot segments, ~6 point clusters and a track or two."""

BALANCED = dataclasses.replace(SIM_PRESETS["seed-v1"], read_noise_e=0.0, dark_current_e=0.0, glow_band_probability=1.0)
"""The simulator's ``seed-v1`` preset without noise: balanced frames like the original's training images."""


def levels(frame: SimulatedFrame) -> np.ndarray:
    """uint8 level (0–25) of each pixel of a noiseless frame in e⁻, from its truth classes and charge."""
    if frame.metadata.get("units") != "e" or frame.metadata.get("read_noise_e", 1.0) != 0.0:
        raise InputError("seed-v1 rendering needs a noiseless frame in e⁻ (units 'e', read_noise_e 0)")
    charge = np.maximum(frame.image, 1.0)
    cluster = np.clip(np.ceil(np.log2(charge)), *CLUSTER_LEVELS)
    out = np.zeros(frame.labels.shape, dtype=np.uint8)
    out[frame.labels == GLOWING] = GLOWING_LEVEL
    out[frame.labels == HOT_PIXEL] = HOT_LEVEL
    is_cluster = frame.labels == CLUSTER
    out[is_cluster] = cluster[is_cluster]
    return out


def render(frame: SimulatedFrame) -> np.ndarray:
    """RGBA uint8 image of a noiseless frame, as the original project drew its images."""
    from matplotlib import colormaps

    rgba = colormaps["viridis"](levels(frame).astype(np.float32) / STEPS, bytes=True)
    return np.ascontiguousarray(rgba)


def rendered_frames(config: SimConfig, n: int, seed: int) -> list[tuple[np.ndarray, SimulatedFrame]]:
    """``n`` frames of ``config`` (seeds ``frame_seed(seed, i)``), each as (RGBA image, frame)."""
    frames = [simulate_frame(config, frame_seed(seed, i)) for i in range(n)]
    return [(render(frame), frame) for frame in frames]
