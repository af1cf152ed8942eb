"""Domain randomisation: every training frame from its own detector, reproducibly, within the ranges."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_ccdseg.classes import BACKGROUND, CLUSTER
from napari_ccdseg.errors import InputError
from napari_ccdseg.normalise import normalise
from napari_ccdseg.randomise import DomainRanges, random_config, randomised_frames
from napari_ccdseg.simulate import SimConfig, simulate_frame


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
    quantisation. The overscan holds read noise alone, so there it must be N(0, 1)."""
    rng = np.random.default_rng(11)
    ranges = DomainRanges(overscan_probability=1.0, dead_probability=0.0)
    for seed in range(12):
        config = random_config(rng, SimConfig(rows=256, cols=256), ranges)
        z = normalise(simulate_frame(config, seed).image, "sigma")
        overscan = z[:, config.prescan_cols + config.cols :]
        assert overscan.std() == pytest.approx(1.0, abs=0.12), config
        assert abs(overscan.mean()) < 0.15, config  # a glow band of ~1 σ lifts row medians ~0.1 σ


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
