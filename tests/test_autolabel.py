"""Auto-labeler: seed-v1 colour rules and the physical preset on synthetic frames."""

import numpy as np
import pytest

from napari_ccdseg.autolabel import LABEL_PRESETS, SEED_V1_RULES, PhysicalParams, Rule, apply_rules, label_frame
from napari_ccdseg.classes import (
    BACKGROUND,
    CLUSTER,
    GLOWING,
    HOT_PIXEL,
    N_CLASSES,
    UNLABELLED,
)
from napari_ccdseg.errors import InputError
from napari_ccdseg.io import monochrome

SIZE = 64


def noise_frame(seed=0, shape=(SIZE, SIZE), pedestal=0.0):
    """Read noise with σ = 1, so amplitudes below are in σ."""
    return pedestal + np.random.default_rng(seed).normal(size=shape)


def gaussian_blob(amplitude, width, centre, shape=(SIZE, SIZE)):
    """Expected charge of a diffused point deposit."""
    rows, cols = np.indices(shape)
    r2 = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2
    return amplitude * np.exp(-r2 / (2 * width**2))


# --- seed-v1 rules ---------------------------------------------------------------------------

BOUNDARY_CASES = [
    (51.0, BACKGROUND),
    (51.01, UNLABELLED),  # bounds are strict
    (55.0, UNLABELLED),
    (59.0, UNLABELLED),
    (59.01, CLUSTER),
    (99.99, CLUSTER),  # not glowing (strict), so the cluster rule claims it
    (100.0, GLOWING),
    (100.5, GLOWING),  # glowing and cluster both match: the first rule wins
    (101.0, GLOWING),
    (101.01, CLUSTER),
    (120.09, CLUSTER),
    (120.1, UNLABELLED),
    (124.0, UNLABELLED),
    (124.01, HOT_PIXEL),
    (200.0, HOT_PIXEL),
]


def test_seed_v1_boundaries_and_order():
    values = np.array([[v for v, _ in BOUNDARY_CASES]])
    expected = np.array([[c for _, c in BOUNDARY_CASES]], dtype=np.uint8)
    labels = label_frame(values, "seed-v1")
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected)


def test_first_matching_rule_wins():
    values = np.array([[5.0, 15.0]])
    rules = (Rule(GLOWING, above=0, below=10), Rule(CLUSTER, above=0))
    np.testing.assert_array_equal(apply_rules(values, rules), [[GLOWING, CLUSTER]])
    np.testing.assert_array_equal(apply_rules(values, rules[::-1]), [[CLUSTER, CLUSTER]])


def test_unmatched_can_be_background():
    values = np.array([[55.0, 130.0]])
    np.testing.assert_array_equal(
        label_frame(values, "seed-v1", unmatched=BACKGROUND), [[BACKGROUND, HOT_PIXEL]]
    )


def test_colour_mean_ignores_alpha():
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (90, 105, 105)  # mean 100: glowing
    rgb[0, 1] = (200, 200, 200)  # hot pixel
    rgb[1, 0] = (30, 60, 90)  # mean 60: cluster
    rgb[1, 1] = (10, 20, 30)  # background
    expected = [[GLOWING, HOT_PIXEL], [CLUSTER, BACKGROUND]]
    for alpha in (0, 255):
        rgba = np.dstack([rgb, np.full((2, 2), alpha, dtype=np.uint8)])
        assert monochrome(rgba)[0, 0] == pytest.approx(100.0)
        np.testing.assert_array_equal(label_frame(rgba, "seed-v1"), expected)
    np.testing.assert_array_equal(label_frame(rgb, "seed-v1"), expected)
    assert SEED_V1_RULES[0].cls == BACKGROUND


@pytest.mark.parametrize("shape", [(8,), (4, 4, 2), (2, 4, 4, 3)])
def test_wrong_ndim_names_the_frame(shape):
    with pytest.raises(InputError, match="run7.fits"):
        label_frame(np.zeros(shape), name="run7.fits")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels_name_the_frame(bad):
    frame = noise_frame()
    frame[3, 4] = bad
    with pytest.raises(InputError, match=r"run7\.fits: 1 pixel"):
        label_frame(frame, name="run7.fits")


def test_unknown_preset_lists_the_presets():
    with pytest.raises(InputError, match="seed-v1, physical"):
        label_frame(noise_frame(), "magic")
    assert LABEL_PRESETS == ("seed-v1", "physical")


# --- physical preset -------------------------------------------------------------------------


def test_blob_becomes_cluster_with_its_halo():
    expected = gaussian_blob(40.0, 1.5, (32, 30))
    labels = label_frame(noise_frame(1) + expected)
    assert np.all(labels[expected >= 5] == CLUSTER)
    halo = expected >= 2
    assert np.mean(labels[halo] == CLUSTER) > 0.85
    far = gaussian_blob(1.0, 1.5, (32, 30)) < np.exp(-((7 / 1.5) ** 2) / 2)  # > 7 px away
    assert not np.any(labels[far] == CLUSTER)
    assert not np.any(labels == HOT_PIXEL)


@pytest.mark.parametrize("seed", [2, 3])
def test_pure_noise_is_background(seed):
    labels = label_frame(noise_frame(seed, shape=(256, 256), pedestal=1000.0))
    assert np.mean(labels != BACKGROUND) < 0.001


def test_hot_column_found_and_clusters_on_it_kept():
    frame = noise_frame(4)
    frame[:, 20] += 3.0
    expected = gaussian_blob(30.0, 1.5, (40, 20))
    labels = label_frame(frame + expected)
    column = labels[:, 20]
    assert np.all((column == HOT_PIXEL) | (column == CLUSTER))
    assert np.all(labels[expected >= 5] == CLUSTER)
    others = np.delete(labels, 20, axis=1)
    assert not np.any(others == HOT_PIXEL)


def test_hot_pixels_and_segments_versus_clusters():
    frame = noise_frame(5)
    frame[10, 10] += 60.0  # isolated hot pixel
    frame[50, 30:34] += 40.0  # short hot segment along a row
    frame[20:23, 50] += 40.0  # short hot segment along a column
    blob = gaussian_blob(60.0, 1.0, (40, 12))  # bright, but with a diffusion halo
    labels = label_frame(frame + blob)
    assert labels[10, 10] == HOT_PIXEL
    assert np.all(labels[50, 30:34] == HOT_PIXEL)
    assert np.all(labels[20:23, 50] == HOT_PIXEL)
    assert np.all(labels[blob >= 5] == CLUSTER)
    assert np.count_nonzero(labels == HOT_PIXEL) == 1 + 4 + 3


def test_glowing_gradient_region():
    columns = np.arange(SIZE)
    glow = 6.0 * np.exp(-columns / 10.0)[None, :] * np.ones((SIZE, 1))
    labels = label_frame(noise_frame(6) + glow)
    assert np.all(labels[glow >= 2] == GLOWING)
    assert np.mean(labels[glow >= 1] == GLOWING) > 0.8  # the cut rises near the frame edges
    assert not np.any(labels[glow < 0.1] == GLOWING)
    assert set(np.unique(labels)) == {BACKGROUND, GLOWING}  # no false cluster at the peak


def test_glowing_corner_and_band_edges():
    rows, cols = np.indices((SIZE, SIZE))
    corner = 8.0 * np.exp(-np.hypot(rows - 63, cols - 63) / 12.0)
    band = np.where(cols < 20, 4.0, 0.0)
    labels = label_frame(noise_frame(7) + corner + band)
    assert np.all(labels[:, :20] == GLOWING)
    assert not np.any(labels[:20, 20:40] == GLOWING)  # the band's edge, far from the corner
    assert np.all(labels[corner >= 2] == GLOWING)
    assert np.mean(labels[corner >= 1] == GLOWING) > 0.75
    assert not np.any(labels[(corner < 0.1) & (cols >= 20)] == GLOWING)
    assert set(np.unique(labels)) == {BACKGROUND, GLOWING}


def test_labels_invariant_under_gain_and_pedestal():
    frame = noise_frame(8) + gaussian_blob(30.0, 1.5, (20, 40))
    frame[:, :12] += 3.0
    frame[:, 30] += 4.0
    frame[5, 50] += 50.0
    labels = label_frame(frame)
    assert set(np.unique(labels)) == {BACKGROUND, GLOWING, HOT_PIXEL, CLUSTER}
    np.testing.assert_array_equal(label_frame(3.7 * frame + 1000.0), labels)
    np.testing.assert_array_equal(label_frame(np.round(100 * frame) + 5000), labels)


def test_row_pedestal_follows_a_drifting_baseline():
    drift = np.linspace(0.0, 6.0, SIZE)[:, None]
    frame = noise_frame(9) + drift
    assert np.any(label_frame(frame) == GLOWING)  # without it the drift reads as glow
    labels = label_frame(frame, params=PhysicalParams(row_pedestal=True))
    assert np.mean(labels != BACKGROUND) < 0.01


def test_physical_params_are_checked_and_serialisable():
    params = PhysicalParams(seed_sigma=5.0)
    assert params.to_dict()["seed_sigma"] == 5.0
    assert set(params.to_dict()) >= {"grow_sigma", "hot_sigma", "glow_sigma", "glow_scale_px"}
    with pytest.raises(InputError, match="grow_sigma"):
        PhysicalParams(seed_sigma=2.0, grow_sigma=3.0)
    with pytest.raises(InputError, match="min_cluster_pixels must be >= 1, got 0"):
        PhysicalParams(min_cluster_pixels=0)


def _isolated_spikes(frame, count, amplitude, seed=0):
    """Add +amplitude σ to ``count`` pixels whose eight neighbours all sit below 1.5 σ."""
    rows, cols = np.nonzero(np.abs(frame[1:-1, 1:-1]) < 1.5)
    rng = np.random.default_rng(seed)
    chosen = []
    for index in rng.permutation(rows.size):
        r, c = rows[index] + 1, cols[index] + 1
        window = frame[r - 1 : r + 2, c - 1 : c + 2].copy()
        window[1, 1] = 0.0
        far = all(max(abs(r - a), abs(c - b)) > 3 for a, b in chosen)
        if window.max() < 1.5 and far:
            chosen.append((r, c))
        if len(chosen) == count:
            break
    spiked = frame.copy()
    for r, c in chosen:
        spiked[r, c] += amplitude
    return spiked, chosen


def test_lone_pixels_above_seed_are_not_clusters():
    # At skipper noise one dark-current electron is ~6 σ in a single pixel: no cluster.
    frame = noise_frame(10)
    frame[40:43, 40:43] += 6.0  # a 3 × 3 deposit: charge spread over pixels, a real cluster
    frame, spikes = _isolated_spikes(frame, count=12, amplitude=6.0)
    assert len(spikes) == 12
    labels = label_frame(frame)
    assert not np.any(labels[tuple(np.transpose(spikes))] == CLUSTER)
    assert np.all(labels[40:43, 40:43] == CLUSTER)
    outside = np.ones(labels.shape, dtype=bool)
    outside[39:44, 39:44] = False
    assert not np.any(labels[outside] == CLUSTER)
    assert not np.any(labels == HOT_PIXEL)  # 6 σ is below hot_sigma: plain background


def test_min_cluster_pixels_one_keeps_lone_pixels():
    frame, spikes = _isolated_spikes(noise_frame(10), count=12, amplitude=6.0)
    assert len(spikes) == 12
    labels = label_frame(frame, params=PhysicalParams(min_cluster_pixels=1))
    assert np.all(labels[tuple(np.transpose(spikes))] == CLUSTER)
