"""frame_scale: one source of pedestal, noise and gain, right on electron-counting frames and
unchanged (bit for bit) on the frames that do not resolve electrons."""

import dataclasses

import numpy as np
import pytest

from napari_ccdseg.calibrate import calibrate_frame
from napari_ccdseg.classes import BACKGROUND
from napari_ccdseg.errors import InputError
from napari_ccdseg.framescale import frame_scale
from napari_ccdseg.noise import minus_offset, pedestal_noise, row_pedestals
from napari_ccdseg.normalise import normalisation_params, normalise, soft_clip
from napari_ccdseg.simulate import SIM_PRESETS, simulate_frame

SMALL = {  # each preset at a test-sized shape; damic-m keeps its overscan columns
    "conventional": dict(rows=192, cols=192),
    "skipper": dict(rows=192, cols=256),
    "seed-v1": dict(),
    "single-sample": dict(rows=192, cols=192),
    "damic-m": dict(rows=160, cols=320),
}


def _frame(preset: str, seed: int):
    config = dataclasses.replace(SIM_PRESETS[preset], **SMALL[preset])
    return config, simulate_frame(config, seed)


def _old_sigma(plane: np.ndarray, clip: float = 10.0) -> np.ndarray:
    """normalise's `sigma` before frame_scale: median, row pedestals, MAD."""
    z = minus_offset(plane, pedestal_noise(plane)[0])
    z -= row_pedestals(z)[:, None]
    z /= np.float32(pedestal_noise(z)[1])
    return soft_clip(z, clip)


@pytest.mark.parametrize(("preset", "seed"), [("conventional", 0), ("conventional", 3), ("seed-v1", 3),
                                              ("single-sample", 0), ("single-sample", 3)])
def test_frames_without_resolved_electrons_normalise_bit_for_bit_as_before(preset, seed):
    _, sim = _frame(preset, seed)
    scale = frame_scale(sim.image)
    assert scale.method == "robust" and not scale.resolves_electrons
    np.testing.assert_array_equal(normalise(sim.image, "sigma"), _old_sigma(sim.image))
    with pytest.raises(InputError, match="no gain"):
        scale.electrons(sim.image)


@pytest.mark.parametrize(("preset", "seed"), [("skipper", 2), ("damic-m", 0), ("damic-m", 2)])
def test_electron_counting_frames_take_the_zero_electron_peak(preset, seed):
    config, sim = _frame(preset, seed)
    scale = frame_scale(sim.image)
    gain = config.gain_adu_per_e if config.units == "adu" else 1.0
    noise = config.read_noise_e * gain
    assert scale.method == "peaks" and scale.resolves_electrons
    assert scale.gain_adu_per_e == pytest.approx(gain, rel=0.01)
    assert scale.noise_adu == pytest.approx(noise, rel=0.10)
    pedestal = config.pedestal_adu if config.units == "adu" else 0.0
    assert abs(scale.pedestal_adu - pedestal) < 0.25 * noise  # the drift has mean 0 over the rows
    # empty pixels (truth: background holding no electron) sit on the row pedestal
    overscan = sim.image[:, config.prescan_cols + config.cols :] if config.overscan_cols else None
    if overscan is not None:
        residual = overscan - scale.row_pedestal_adu[:, None]
        assert abs(residual.mean()) < 0.15 * noise and residual.std() == pytest.approx(noise, rel=0.1)
    if overscan is not None:  # in electrons the empty overscan reads 0 e⁻ within the noise
        assert abs(scale.electrons(sim.image)[:, config.prescan_cols + config.cols :].mean()) < 0.15 * config.read_noise_e
    robust_pedestal, robust_noise = pedestal_noise(sim.image)
    if config.dark_current_e > 0.5:  # what the median and MAD would have said
        assert robust_noise > 3 * noise and robust_pedestal - pedestal > 0.15 * gain


def test_damic_m_normalises_in_units_of_read_noise():
    config, sim = _frame("damic-m", 1)
    z = normalise(sim.image, "sigma")
    overscan = z[:, config.prescan_cols + config.cols :]
    assert overscan.std() == pytest.approx(1.0, abs=0.1) and abs(overscan.mean()) < 0.1
    one_electron = z[sim.labels == BACKGROUND]
    one_electron = one_electron[(one_electron > 3) & (one_electron < 9)]
    assert np.median(one_electron) == pytest.approx(1 / config.read_noise_e, rel=0.05)  # 1 e- = 6.25 σ


def test_models_saved_before_frame_scale_keep_their_normalisation():
    """A model file recording no scale was trained on the median/MAD: it gets them, comb or not."""
    _, sim = _frame("damic-m", 0)
    np.testing.assert_array_equal(normalise(sim.image, "sigma", **normalisation_params("sigma")),
                                  _old_sigma(sim.image))
    assert not np.array_equal(normalise(sim.image, "sigma", scale="frame"), _old_sigma(sim.image))


def test_a_calibration_that_resolves_electrons_wins_one_that_does_not_lends_its_gain():
    config, sim = _frame("damic-m", 0)
    calibration = calibrate_frame(sim.image, exclude=sim.labels != BACKGROUND)
    scale = frame_scale(sim.image, calibration=calibration)
    assert scale.method == "peaks"
    np.testing.assert_allclose(scale.row_pedestal_adu, calibration.row_pedestal_adu, atol=1e-4)
    assert scale.noise_adu == pytest.approx(calibration.noise_adu)
    _, plain = _frame("conventional", 0)
    given = calibrate_frame(plain.image, gain=3.0)
    scale = frame_scale(plain.image, calibration=given)
    robust = frame_scale(plain.image)
    assert scale.method == "given" and scale.gain_adu_per_e == 3.0
    np.testing.assert_array_equal(scale.row_offset_adu, robust.row_offset_adu)
    assert scale.noise_adu == robust.noise_adu
    assert frame_scale(plain.image, header={"GAIN": 4.5}).gain_adu_per_e == 4.5
    with pytest.raises(InputError, match="row pedestals"):
        frame_scale(plain.image[:100], calibration=calibration)


@pytest.mark.parametrize(("preset", "seed"), [("conventional", 0), ("seed-v1", 3), ("single-sample", 3),
                                              ("seed-v1", 6), ("seed-v1", 8)])
def test_a_continuum_above_the_pedestal_is_no_electron_comb(preset, seed):
    """Cluster halos and hot pixels once passed for a one-electron peak (single-sample: 399 ADU/e-),
    and a glow band 40–60 columns wide for a comb of gain 7 (seed-v1, seeds 6 and 8)."""
    sim = simulate_frame(SIM_PRESETS[preset], seed)
    calibration = calibrate_frame(sim.image, gain=1.0)
    assert calibration.method == "given"
    assert any(word in calibration.fit["unresolved"] for word in ("electron peak", "band of glow", "in patches"))
    assert frame_scale(sim.image).method == "robust"


def test_dark_as_noise_turns_a_dark_current_ramp_into_flat_unit_background():
    """damic-m: λ rises 0.3 -> 1.5 e-/px along the rows; counted as noise, the empty pixels of every
    row come out with mean 0 and spread 1, where the zero-electron peak's σ makes them 6 σ hits."""
    config, sim = _frame("damic-m", 1)
    scale = frame_scale(sim.image)
    rows = sim.image.shape[0]
    assert scale.dense_dark_current and scale.row_dark_e.shape == (rows,)
    active = np.zeros(sim.image.shape, bool)
    active[: config.rows, config.prescan_cols : config.prescan_cols + config.cols] = True
    empty = active & (sim.labels == BACKGROUND)
    counts = np.rint(scale.electrons(sim.image))
    for band in (slice(0, 40), slice(120, 160)):  # λ, fitted per band of rows, follows the rise
        dark = counts[band][empty[band]].mean()
        assert scale.row_dark_e[band].mean() == pytest.approx(dark, rel=0.15)
    z = normalise(sim.image, "sigma", scale="robust", dark_as_noise=True)
    plain = normalise(sim.image, "sigma", scale="frame")
    for band in (slice(0, rows // 4), slice(3 * rows // 4, config.rows)):
        background = z[band][empty[band]]
        assert abs(background.mean()) < 0.15 and background.std() == pytest.approx(1.0, rel=0.15)
        assert plain[band][empty[band]].std() > 3
    np.testing.assert_array_equal(normalise(sim.image, "sigma", scale="frame", dark_as_noise=True, known=scale), z)
    for empty_region in (z[: config.rows, config.prescan_cols + config.cols :], z[config.rows :]):  # no dark current:
        assert abs(empty_region.mean()) < 0.1 and empty_region.std() == pytest.approx(1.0, rel=0.1)  # read-noise units


@pytest.mark.parametrize(("preset", "scale"), [("conventional", "robust"), ("skipper", "frame"), ("skipper", "robust")])
def test_dark_as_noise_leaves_frames_with_sparse_dark_current_as_they_were(preset, scale):
    """Frames without a comb, or with sparse dark current (skipper: 0.01 e⁻/px), normalise bit for
    bit as without it."""
    _, sim = _frame(preset, 2)
    assert not frame_scale(sim.image).dense_dark_current
    np.testing.assert_array_equal(normalise(sim.image, "sigma", scale=scale, dark_as_noise=True),
                                  normalise(sim.image, "sigma", scale=scale))
