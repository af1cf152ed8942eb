"""Domain randomisation: training frames from many simulated detectors, so one model serves them all.

A model trained on one simulated detector learns its noise, gain and defect rates by heart and
fails on the next detector. Drawing every training frame from a different detector, with noise,
gain, pedestal, drift, dark current (up to electron-counting levels, with readout ramps), event and
defect rates, trail brightness, alphas, full wells, CTI, glitches and quantisation spread over what
real CCDs show, leaves the network only what all of them share: clusters are compact charge
above the noise, defects are not. The input normalisation (σ above the row pedestal) removes gain
and pedestal; randomising them checks it does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .dataset import LabelledFrame
from .errors import InputError
from . import simulate
from .simulate import SimConfig, _dead_config, frame_seed, simulate_frame


@dataclass(frozen=True)
class DomainRanges:
    """Where each randomised parameter is drawn from, uniformly or log-uniformly (``log_*``).

    Rates are per 512² as in :class:`~napari_ccdseg.simulate.SimConfig`; drift and quantisation
    are in units of the frame's read noise, so they stay meaningful at any noise and gain.
    ``*_probability`` is the share of frames with that feature (a dark-current ramp, alphas, a full
    well); a frame's serial trails all have levels within a factor 2 of one log-uniform draw.
    """

    log_read_noise_e: tuple[float, float] = (0.1, 3.5)
    log_gain_adu_per_e: tuple[float, float] = (0.5, 50.0)
    pedestal_adu: tuple[float, float] = (-200.0, 30000.0)
    drift_sigma: tuple[float, float] = (0.0, 1.0)
    log_dark_current_e: tuple[float, float] = (5e-4, 2.0)
    dark_ramp_probability: float = 0.4
    dark_current_row_ramp: tuple[float, float] = (0.0, 0.9)
    dark_current_col_ramp: tuple[float, float] = (0.0, 0.3)
    log_cluster_rate: tuple[float, float] = (20.0, 400.0)
    few_electron_rate: tuple[float, float] = (0.0, 100.0)
    muon_rate: tuple[float, float] = (0.0, 3.0)
    electron_track_rate: tuple[float, float] = (0.0, 6.0)
    serial_trail_rate: tuple[float, float] = (0.0, 4.0)
    log_serial_trail_e: tuple[float, float] = (1.0, 3000.0)
    serial_trail_length: tuple[float, float] = (10.0, 200.0)
    cti_trail: tuple[float, float] = (0.0, 0.3)
    glitch_rate: tuple[float, float] = (0.0, 2.0)
    log_defect_scale: tuple[float, float] = (0.2, 3.0)
    amp_glow_e: tuple[float, float] = (0.0, 20.0)
    glow_band_probability: float = 0.3
    thickness_um: tuple[float, float] = (300.0, 675.0)
    quantisation_sigma: tuple[float, float] = (0.0, 0.5)
    overscan_probability: float = 0.5
    dead_probability: float = 0.03
    alpha_probability: float = 0.05
    alpha_rate: tuple[float, float] = (1.0, 4.0)
    full_well_probability: float = 0.3
    log_full_well_e: tuple[float, float] = (5e3, 1e5)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            pair = value if isinstance(value, tuple) else (value, value)
            if len(pair) != 2 or not all(math.isfinite(v) for v in pair) or pair[0] > pair[1]:
                raise InputError(f"DomainRanges: {field.name} must be a finite (lo, hi) with lo <= hi, got {value!r}")
            if field.name.startswith("log_") and pair[0] <= 0:
                raise InputError(f"DomainRanges: {field.name} is drawn log-uniformly and needs lo > 0, got {value!r}")


def _uniform(rng: np.random.Generator, pair: tuple[float, float]) -> float:
    return float(rng.uniform(*pair))


def _log_uniform(rng: np.random.Generator, pair: tuple[float, float]) -> float:
    return float(simulate._log_uniform(rng, pair[0], pair[1], 1)[0])


def random_config(rng: np.random.Generator, base: SimConfig, ranges: DomainRanges) -> SimConfig:
    """One detector drawn from ``ranges``; geometry and everything not randomised come from ``base``."""
    noise = _log_uniform(rng, ranges.log_read_noise_e)
    gain = _log_uniform(rng, ranges.log_gain_adu_per_e)
    defects = _log_uniform(rng, ranges.log_defect_scale)
    overscan = rng.random() < ranges.overscan_probability
    config = dataclasses.replace(
        base,
        units="adu",
        read_noise_e=noise,
        gain_adu_per_e=gain,
        pedestal_adu=_uniform(rng, ranges.pedestal_adu),
        pedestal_drift_e=noise * _uniform(rng, ranges.drift_sigma),
        dark_current_e=_log_uniform(rng, ranges.log_dark_current_e),
        cluster_rate=_log_uniform(rng, ranges.log_cluster_rate),
        few_electron_rate=_uniform(rng, ranges.few_electron_rate),
        muon_rate=_uniform(rng, ranges.muon_rate),
        electron_track_rate=_uniform(rng, ranges.electron_track_rate),
        serial_trail_rate=_uniform(rng, ranges.serial_trail_rate),
        cti_trail=_uniform(rng, ranges.cti_trail) if rng.random() < 0.5 else 0.0,
        glitch_rate=_uniform(rng, ranges.glitch_rate),
        hot_pixels=tuple(v * defects for v in base.hot_pixels),
        hot_segments=tuple(v * defects for v in base.hot_segments),
        hot_columns=tuple(v * defects for v in base.hot_columns),
        amp_glow_e=_uniform(rng, ranges.amp_glow_e),
        glow_band_probability=ranges.glow_band_probability,
        thickness_um=_uniform(rng, ranges.thickness_um),
        quantisation_step=noise * gain * _uniform(rng, ranges.quantisation_sigma),
        prescan_cols=int(rng.integers(0, 9)) if overscan else 0,
        overscan_cols=int(rng.integers(8, 65)) if overscan else 0,
        overscan_rows=int(rng.integers(0, 17)) if overscan else 0,
    )
    if rng.random() < ranges.dead_probability:
        return _dead_config(config, noise_adu=_log_uniform(rng, (500.0, 5000.0)))
    return _electron_counting(rng, config, ranges)


def _electron_counting(rng: np.random.Generator, config: SimConfig, ranges: DomainRanges) -> SimConfig:
    """What real electron-counting frames add: dark-current ramps, bright serial trails, alphas,
    saturation. Drawn after everything else, so each seed keeps the rest of its detector."""
    ramp = rng.random() < ranges.dark_ramp_probability
    row_ramp, col_ramp = _uniform(rng, ranges.dark_current_row_ramp), _uniform(rng, ranges.dark_current_col_ramp)
    trail_e = _log_uniform(rng, ranges.log_serial_trail_e)
    alphas = rng.random() < ranges.alpha_probability
    alpha_rate = _uniform(rng, ranges.alpha_rate)
    full_well = rng.random() < ranges.full_well_probability
    full_well_e = _log_uniform(rng, ranges.log_full_well_e)
    return dataclasses.replace(
        config,
        dark_current_row_ramp=row_ramp if ramp else 0.0,
        dark_current_col_ramp=col_ramp if ramp else 0.0,
        serial_trail_e=(trail_e / 2, trail_e * 2),
        serial_trail_length=tuple(int(round(v)) for v in ranges.serial_trail_length),
        alpha_rate=alpha_rate if alphas else 0.0,
        full_well_e=full_well_e if full_well else 0.0,
    )


def randomised_frames(
    n: int,
    seed: int = 0,
    *,
    rows: int = 256,
    cols: int = 256,
    base: SimConfig | None = None,
    ranges: DomainRanges | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[LabelledFrame]:
    """``n`` frames with truth, each from its own randomly drawn detector (reproducible by seed).

    ``should_stop`` is asked before each frame; when it says yes, the frames made so far are
    returned (hundreds of frames take seconds, and a Stop button must not wait for them)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"randomised_frames: n must be a positive integer, got {n!r}")
    base = dataclasses.replace(base if base is not None else SimConfig(), rows=rows, cols=cols)
    ranges = ranges if ranges is not None else DomainRanges()
    frames = []
    for i in range(n):
        if should_stop is not None and should_stop():
            break
        rng = np.random.default_rng(frame_seed(seed, i))
        config = random_config(rng, base, ranges)
        sim = simulate_frame(config, frame_seed(seed + 1, i))
        frames.append(LabelledFrame(f"randomised_{i:04d}", sim.image, sim.labels, sim.instances))
    return frames
