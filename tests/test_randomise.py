"""Domain randomisation: every training frame from its own detector, reproducibly, within the ranges."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_ccdseg.classes import BACKGROUND, CLUSTER
from napari_ccdseg.errors import InputError
from napari_ccdseg.normalise import normalise
from napari_ccdseg.randomise import DomainRanges, random_config, randomised_frames
from napari_ccdseg.simulate import SIM_PRESETS, SimConfig, simulate_frame


def test_same_seed_same_frames_other_seed_other_frames():
    a, b, c = (randomised_frames(3, seed, rows=48, cols=48) for seed in (1, 1, 2))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.labels, y.labels)
    assert not np.array_equal(a[0].image, c[0].image)


def test_a_stop_request_ends_the_simulation_with_the_frames_made_so_far():
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 2

    made = randomised_frames(5, 3, rows=48, cols=48, should_stop=should_stop)
    full = randomised_frames(5, 3, rows=48, cols=48)
    assert len(made) == 2
    for x, y in zip(made, full):
        assert x.name == y.name
        np.testing.assert_array_equal(x.image, y.image)


def test_detectors_spread_over_the_ranges():
    rng = np.random.default_rng(0)
    ranges = DomainRanges(dead_probability=0.0)
    configs = [random_config(rng, SimConfig(rows=64, cols=64), ranges) for _ in range(300)]
    noise = np.array([c.read_noise_e for c in configs])
    gain = np.array([c.gain_adu_per_e for c in configs])
    assert noise.min() >= 0.1 and noise.max() <= 3.5 and noise.max() / noise.min() > 10
    assert gain.min() >= 0.5 and gain.max() <= 50 and gain.max() / gain.min() > 20
    assert len({c.pedestal_adu for c in configs}) == 300
    assert 0.3 < np.mean([c.overscan_cols > 0 for c in configs]) < 0.7
    assert 0.2 < np.mean([c.cti_trail > 0 for c in configs]) < 0.8
    assert all(c.quantisation_step <= 0.5 * c.read_noise_e * c.gain_adu_per_e + 1e-9 for c in configs)


def test_normalised_frames_are_in_units_of_read_noise_whatever_the_detector():
    """The promise the model relies on: σ above the pedestal, for any gain, pedestal, drift or
    quantisation. The overscan holds read noise alone, so there it must be N(0, 1). Dark current
    stays below 0.1 e⁻/pixel here: above it the promise does not hold yet (next test)."""
    rng = np.random.default_rng(11)
    ranges = DomainRanges(overscan_probability=1.0, dead_probability=0.0, log_dark_current_e=(5e-4, 0.1))
    for seed in range(12):
        config = random_config(rng, SimConfig(rows=256, cols=256), ranges)
        z = normalise(simulate_frame(config, seed).image, "sigma")
        overscan = z[:, config.prescan_cols + config.cols :]
        assert overscan.std() == pytest.approx(1.0, abs=0.12), config
        assert abs(overscan.mean()) < 0.15, config  # a glow band of ~1 σ lifts row medians ~0.1 σ


def test_normalised_electron_counting_frames_are_in_units_of_read_noise():
    config = SIM_PRESETS["damic-m"]  # λ from 0.3 to 1.5 e⁻/pixel at σ = 0.16 e⁻
    z = normalise(simulate_frame(config, 0).image, "sigma")
    overscan = z[:, config.prescan_cols + config.cols :]
    assert overscan.std() == pytest.approx(1.0, abs=0.12)
    assert abs(overscan.mean()) < 0.15


def test_detectors_cover_electron_counting_frames():
    """Dark current up to ~2 e⁻/pixel, ramps along the readout in some frames, serial trails from a
    few to thousands of e⁻ per pixel, alphas and full wells in a few."""
    rng = np.random.default_rng(1)
    ranges = DomainRanges(dead_probability=0.0)
    configs = [random_config(rng, SimConfig(rows=64, cols=64), ranges) for _ in range(400)]
    dark = np.array([c.dark_current_e for c in configs])
    assert dark.min() >= 5e-4 and dark.max() <= 2.0 and np.mean(dark > 0.5) > 0.05
    ramped = np.array([c.dark_current_row_ramp > 0 for c in configs])
    assert 0.3 < ramped.mean() < 0.5
    assert all(c.dark_current_col_ramp == 0 for c, r in zip(configs, ramped) if not r)
    trail_e = np.array([np.mean(c.serial_trail_e) for c in configs])
    assert trail_e.min() < 5 and trail_e.max() > 1000
    assert all(c.serial_trail_length == (10, 200) for c in configs)
    alphas = np.mean([c.alpha_rate > 0 for c in configs])
    assert 0.01 < alphas < 0.1
    assert 0.2 < np.mean([c.full_well_e > 0 for c in configs]) < 0.4


def test_electron_counting_draws_keep_the_rest_of_each_detector():
    """The new draws come last, so a seed's noise, gain, pedestal and rates are what they were."""
    plain = DomainRanges(dark_ramp_probability=0.0, alpha_probability=0.0, full_well_probability=0.0)
    for seed in range(5):
        a = random_config(np.random.default_rng(seed), SimConfig(), DomainRanges())
        b = random_config(np.random.default_rng(seed), SimConfig(), plain)
        assert (a.read_noise_e, a.gain_adu_per_e, a.pedestal_adu, a.cluster_rate) == (
            b.read_noise_e, b.gain_adu_per_e, b.pedestal_adu, b.cluster_rate)


def test_dead_amplifier_frames_hold_no_charge():
    ranges = dataclasses.replace(DomainRanges(), dead_probability=1.0)
    frames = randomised_frames(3, seed=0, rows=64, cols=64, ranges=ranges)
    assert all((f.labels == BACKGROUND).all() for f in frames)
    live = randomised_frames(6, seed=0, rows=64, cols=64)
    assert any((f.labels == CLUSTER).any() for f in live)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"log_read_noise_e": (0.0, 1.0)}, "log_read_noise_e"),
        ({"pedestal_adu": (10.0, -10.0)}, "pedestal_adu"),
        ({"cti_trail": (0.0, float("nan"))}, "cti_trail"),
    ],
)
def test_bad_ranges_are_refused(changes, words):
    with pytest.raises(InputError, match=words):
        DomainRanges(**changes)


def test_frame_count_must_be_positive():
    with pytest.raises(InputError, match="n must be"):
        randomised_frames(0)
