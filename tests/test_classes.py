"""Class statistics of label maps and the loss's class weights (classes.py)."""

import numpy as np
import pytest

from napari_ccdseg.classes import (
    BACKGROUND,
    CLUSTER,
    GLOWING,
    HOT_PIXEL,
    N_CLASSES,
    UNLABELLED,
    ClassStats,
    class_stats,
    class_weights,
)
from napari_ccdseg.errors import InputError



def test_class_stats_counts_and_percentages():
    first = np.array([[0, 0, 1], [2, 3, 255]], dtype=np.uint8)
    second = np.array([[0, 3, 3, 255]], dtype=np.int64)
    stats = class_stats([first, second])
    np.testing.assert_array_equal(stats.counts, [3, 1, 1, 3])
    assert stats.counts.dtype == np.int64
    assert stats.unlabelled == 2
    assert stats.total == 8
    np.testing.assert_allclose(stats.percentages, [37.5, 12.5, 12.5, 37.5])
    np.testing.assert_array_equal(class_stats(first).counts, [2, 1, 1, 1])
    np.testing.assert_array_equal(class_stats(first.astype(np.uint64)).counts, [2, 1, 1, 1])
    table = stats.table()
    assert "| cluster | 3 | 37.50 |" in table and "unlabelled | 2" in table


@pytest.mark.parametrize("bad", [np.array([[0, 7]]), np.array([[0.0, 1.0]]), np.array([[-1, 0]])])
def test_class_stats_refuses_values_outside_the_scheme(bad):
    with pytest.raises(InputError, match="label map 0"):
        class_stats([bad])


def test_class_weights_reproduce_the_original():
    stats = ClassStats(np.array([4090, 2510, 2140, 1260], dtype=np.int64))
    weights = class_weights(stats)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, [0.514, 0.840, 0.983, 1.663], atol=5e-3)
    assert weights.sum() == pytest.approx(N_CLASSES)


def test_absent_class_gets_zero_weight_and_a_warning():
    maps = [np.array([[0, 0, 0, 1, 1, 3, 255]], dtype=np.uint8)]
    with pytest.warns(UserWarning, match="hot pixel"):
        weights = class_weights(maps)
    assert weights[HOT_PIXEL] == 0
    assert np.all(np.isfinite(weights))
    assert weights.sum() == pytest.approx(N_CLASSES)
    assert weights[CLUSTER] > weights[GLOWING] > weights[BACKGROUND] > 0


def test_all_unlabelled_has_no_weights():
    with pytest.raises(InputError, match="no labelled pixel"):
        class_weights([np.full((4, 4), UNLABELLED, dtype=np.uint8)])
    assert "| background | 0 | 0.00 | - |" in class_stats([np.full((2, 2), 255)]).table()


def test_weighting_modes(tiny_frames):
    maps = [frame.labels for frame in tiny_frames]
    inverse = class_weights(maps, "inverse")
    sqrt = class_weights(maps, "sqrt")
    assert inverse.sum() == pytest.approx(4, rel=1e-4) and sqrt.sum() == pytest.approx(4, rel=1e-4)
    assert sqrt.max() / sqrt.min() <= inverse.max() / inverse.min() + 1e-6
    np.testing.assert_allclose(sqrt, np.sqrt(inverse) * 4 / np.sqrt(inverse).sum(), rtol=1e-6)
    assert np.array_equal(class_weights(maps, "none"), np.ones(4, np.float32))
    with pytest.raises(InputError, match="inverse, sqrt, none"):
        class_weights(maps, "square")
