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
    assert any(word in calibration.fit["unresolved"] for word in ("electron peak", "band of glow"))
    assert frame_scale(sim.image).method == "robust"
