import numpy as np
import pytest
from scipy import ndimage

from napari_ccdseg.augment import augment_pair, band_columns, build_augmentation, paste_band_strip, paste_hot_pixels
from napari_ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL, UNLABELLED


def _pair(rows=80, cols=90, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(rows, cols)).astype(np.float32)
    labels = np.digitize(image, [-0.5, 0.5, 1.5]).astype(np.uint8)  # a function of the pixel value
    return image, labels


def test_image_and_mask_move_together():
    transform = build_augmentation(64, seed=3)
    image, labels = _pair()
    for _ in range(20):
        out_image, out_labels = augment_pair(transform, image, labels)
        assert out_image.shape == out_labels.shape == (64, 64)
        labelled = out_labels != UNLABELLED
        expected = np.digitize(out_image, [-0.5, 0.5, 1.5])
        assert np.array_equal(expected[labelled], out_labels[labelled])


def test_no_intensity_change():
    transform = build_augmentation(64, seed=1)
    image, labels = _pair()
    allowed = set(np.unique(image).tolist()) | {0.0}
    for _ in range(10):
        out_image, _ = augment_pair(transform, image, labels)
        assert set(np.unique(out_image).tolist()) <= allowed


def test_small_tile_is_padded_with_unlabelled():
    transform = build_augmentation(64, seed=0)
    image, labels = _pair(20, 30)
    out_image, out_labels = augment_pair(transform, image, labels)
    assert out_image.shape == (64, 64)
    assert (out_labels == UNLABELLED).sum() >= 64 * 64 - 20 * 30


def test_seeded_augmentation_is_reproducible():
    image, labels = _pair()
    a = [augment_pair(build_augmentation(64, seed=7), image, labels)[0] for _ in range(2)]
    assert np.array_equal(a[0], a[1])


@pytest.mark.parametrize("keep_axes", [True, False])
def test_rows_stay_rows_unless_the_axes_may_turn(keep_axes):
    image = np.zeros((80, 80), np.float32)
    labels = np.zeros((80, 80), np.uint8)
    image[40], labels[40] = 5.0, CLUSTER  # a serial-register trail: one whole row
    transform = build_augmentation(64, seed=4, keep_axes=keep_axes)
    turned = 0
    for _ in range(30):
        _, out_labels = augment_pair(transform, image, labels)
        rows, cols = np.nonzero(out_labels == CLUSTER)
        turned += np.ptp(rows) > np.ptp(cols)
    assert (turned == 0) == keep_axes


def _banded(rows=64, cols=48, band=(5, 17)):
    """A frame with a glowing band of columns; the image holds each pixel's column index."""
    labels = np.zeros((rows, cols), np.uint8)
    labels[:, band[0] : band[1]] = GLOWING
    labels[3, band[0] + 2] = CLUSTER  # a cluster in the band does not stop it being a band column
    image = np.broadcast_to(np.arange(cols, dtype=np.float32), (rows, cols)).copy()
    return image, labels


def test_band_columns_are_the_mostly_glowing_columns():
    image, labels = _banded()
    labels[:40, 30] = GLOWING  # 40 of 64 rows glowing: amplifier glow, not a band
    labels[:, 40] = UNLABELLED
    labels[:2, 40] = GLOWING  # the labelled part of a column decides
    assert band_columns(labels).tolist() == list(range(5, 17)) + [40]


@pytest.mark.parametrize("keep_axes, n_edges", [(True, 2), (False, 4)])
def test_band_strip_lies_along_one_edge_and_copies_band_pixels_with_their_labels(keep_axes, n_edges):
    image, labels = _banded()
    columns = band_columns(labels)
    tile = np.full((32, 32), -1.0, np.float32), np.zeros((32, 32), np.uint8)
    rng = np.random.default_rng(0)
    edges, widths = set(), set()
    for _ in range(60):
        out_image, out_labels = paste_band_strip(*tile, (image, labels), columns, rng, max_width=6, keep_axes=keep_axes)
        pasted = out_image >= 0
        assert out_image.shape == out_labels.shape == (32, 32)
        assert np.all((out_labels == BACKGROUND) == ~pasted)
        assert set(np.unique(out_image[pasted]).tolist()) <= set(range(5, 17))  # band columns only
        rows, cols = np.nonzero(pasted)
        width = max(int(pasted.all(axis=0).sum()), int(pasted.all(axis=1).sum()))
        assert 1 <= width <= 6 and pasted.sum() == 32 * width  # whole rows or whole columns
        widths.add(width)
        edges.add((rows.min() == 0, rows.max() == 31, cols.min() == 0, cols.max() == 31))
    assert len(edges) == n_edges  # left and right (columns stay columns), or all four edges
    if keep_axes:
        assert all(top and bottom for top, bottom, _, _ in edges)  # whole columns
    assert len(widths) >= 4


def test_band_strip_leaves_a_tile_alone_without_band_or_when_the_frame_is_too_short():
    image, labels = _banded(rows=20)
    tile = np.zeros((32, 32), np.float32), np.zeros((32, 32), np.uint8)
    rng = np.random.default_rng(1)
    for columns in (band_columns(labels), np.array([], int)):
        out_image, out_labels = paste_band_strip(*tile, (image, labels), columns, rng)
        assert np.array_equal(out_image, tile[0]) and np.array_equal(out_labels, tile[1])


@pytest.mark.parametrize("keep_axes", [True, False])
def test_hot_pixel_pastes_are_short_straight_runs_with_the_given_values(keep_axes):
    rng = np.random.default_rng(2)
    values = np.array([7.0, 9.0], np.float32)
    sizes, along_rows = set(), 0
    for _ in range(50):
        image, labels = np.zeros((40, 40), np.float32), np.zeros((40, 40), np.uint8)
        out_image, out_labels = paste_hot_pixels(image, labels, values, rng, max_count=3, max_length=4, keep_axes=keep_axes)
        hot = out_labels == HOT_PIXEL
        assert np.array_equal(hot, out_image != 0) and set(np.unique(out_image[hot])) <= {7.0, 9.0}
        assert not labels.any() and not image.any()  # inputs untouched
        runs, n = ndimage.label(hot)
        sizes.update(np.bincount(runs.ravel())[1:].tolist())
        assert 1 <= n and hot.sum() <= 3 * 4
        along_rows += sum(s[1].stop - s[1].start > 1 for s in ndimage.find_objects(runs))
    assert {1, 2, 3, 4} <= sizes
    assert (along_rows == 0) == keep_axes  # runs along a row only when the axes may turn


def test_hot_pixel_pastes_need_hot_values():
    image, labels = np.zeros((8, 8), np.float32), np.zeros((8, 8), np.uint8)
    out_image, out_labels = paste_hot_pixels(image, labels, np.array([], np.float32), np.random.default_rng(0))
    assert not out_image.any() and not out_labels.any()
