"""Input normalisation: what the network sees must not depend on gain, pedestal or drift."""

import numpy as np
import pytest

from napari_ccdseg.errors import InputError
from napari_ccdseg.normalise import (
    choose_normalisation,
    normalisation_params,
    normalise,
    soft_clip,
)


@pytest.fixture
def frame():
    """Noise σ = 2 ADU on a pedestal of 500, with a 30 σ cluster and a 10⁷ ADU glitch."""
    rng = np.random.default_rng(1)
    image = rng.normal(500.0, 2.0, (60, 80))
    image[20:23, 30:33] += 60.0
    image[5, 5] = 1e7
    return image


def test_sigma_is_invariant_to_gain_and_pedestal(frame):
    reference = normalise(frame, "sigma")
    for gain, pedestal in [(3.7, -39.0), (0.01, 20000.0), (250.0, 0.0)]:
        np.testing.assert_allclose(
            normalise(gain * frame + pedestal, "sigma"), reference, atol=2e-3
        )


def test_sigma_removes_a_drifting_row_pedestal(frame):
    drift = np.linspace(0.0, 40.0, frame.shape[0])[:, None]  # 20 σ over the frame
    np.testing.assert_allclose(
        normalise(frame + drift, "sigma"), normalise(frame, "sigma"), atol=1e-3
    )


def test_sigma_is_in_noise_units_and_float32(frame):
    z = normalise(frame, "sigma")
    assert z.dtype == np.float32 and z.shape == frame.shape
    background = np.delete(z.ravel(), [5 * 80 + 5])
    assert np.median(background) == pytest.approx(0.0, abs=0.05)
    assert np.percentile(background, 84) - np.percentile(background, 16) == pytest.approx(
        2.0, rel=0.1
    )


def test_huge_values_are_compressed_but_stay_ordered(frame):
    z = normalise(frame, "sigma", clip=10.0)
    assert 10.0 < z[21, 31] < 30.0  # 30 σ: compressed a little
    assert z[21, 31] < z[5, 5] < 200.0  # 5·10⁶ σ: compressed a lot
    assert np.isfinite(normalise(frame * 1e30, "sigma")).all()


def test_soft_clip_is_linear_then_smooth_and_symmetric():
    z = np.array([-1e6, -10.0, -3.0, 0.0, 9.99, 10.0, 10.01, 1e6], dtype=np.float32)
    y = soft_clip(z.copy(), 10.0)
    np.testing.assert_array_equal(y[1:6], z[1:6])
    assert y[6] == pytest.approx(10.01, abs=1e-4)  # slope 1 at the knee
    assert y[0] == -y[-1]
    assert np.all(np.diff(y) > 0)


def test_unit_averages_rgb_and_ignores_alpha():
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 17
    rgba[0, 0, :3] = 255
    mono = normalise(rgba, "unit")
    assert mono.shape == (4, 5) and mono.dtype == np.float32
    assert mono[0, 0] == pytest.approx(1.0)
    assert mono[1, 1] == pytest.approx(1 / 3)


def test_unit_accepts_floats_already_in_unit_range():
    rgb = np.full((3, 3, 3), 0.5, dtype=np.float32)
    np.testing.assert_allclose(normalise(rgb, "unit"), 0.5)


@pytest.mark.parametrize(
    ("image", "method"),
    [
        (np.zeros((8, 8, 4), np.uint8), "unit"),
        (np.zeros((8, 8, 3), np.float32), "unit"),
        (np.zeros((8, 8), np.uint8), "unit"),
        (np.zeros((8, 8), np.uint16), "sigma"),
        (np.zeros((8, 8), np.float64), "sigma"),
    ],
)
def test_choose_normalisation(image, method):
    assert choose_normalisation(image) == method


def test_constant_frame_gives_zeros():
    np.testing.assert_array_equal(normalise(np.full((5, 7), 42, np.int32), "sigma"), 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels_are_refused_naming_the_source(frame, bad):
    frame[3, 3] = bad
    with pytest.raises(InputError, match=r"run7\.fits: 1 pixel"):
        normalise(frame, "sigma", source="run7.fits")


@pytest.mark.parametrize("shape", [(2, 5, 5), (5, 5, 2), (5,)])
def test_other_shapes_are_refused(shape):
    with pytest.raises(InputError, match="shape"):
        normalise(np.zeros(shape), "sigma")


def test_unknown_method_and_bad_clip_are_refused(frame):
    with pytest.raises(InputError, match="sigma, unit"):
        normalise(frame, "zscore")
    with pytest.raises(InputError, match="clip"):
        normalise(frame, "sigma", clip=0.0)


def test_record_replays_the_same_normalisation(frame):
    params = normalisation_params("sigma", clip=5)
    assert params == {"clip": 5.0, "scale": "robust"}  # what a model file recording no scale meant
    np.testing.assert_array_equal(
        normalise(frame, "sigma", **params), normalise(frame, "sigma", clip=5.0)
    )
    assert normalisation_params("unit") == {}
    with pytest.raises(TypeError):
        normalisation_params("sigma", knee=3.0)
    with pytest.raises(InputError, match="frame, robust"):
        normalisation_params("sigma", scale="median")
    on = normalisation_params("sigma", scale="frame", dark_as_noise=True)
    assert on == {"clip": 10.0, "scale": "frame", "dark_as_noise": True}  # recorded only when on
    with pytest.raises(InputError, match="dark_as_noise"):
        normalisation_params("sigma", dark_as_noise="yes")


def test_noise_estimates_on_quantised_frames():
    """fpack-like grids finer than the noise are seen through; one coarser than it is not dithered."""
    from napari_ccdseg.noise import pedestal_noise, row_pedestals

    rng = np.random.default_rng(3)
    for sigma, tolerance in [(4.0, 0.02), (1.0, 0.08), (0.3, 0.1)]:
        frame = np.round(rng.normal(100.0, sigma, (256, 256)))
        assert pedestal_noise(frame)[1] == pytest.approx(sigma, rel=tolerance), sigma
    frame = np.round(rng.normal(100.0, 4.0, (64, 64)))
    frame[3, 3] = np.nan  # the row estimate skips it rather than failing on the grid step
    assert np.all(np.abs(row_pedestals(frame) - 100.0) < 3.0)
